"""The client's request inspector (issue 15): its JSON API through a real tunnel (our server, our
client, the Node origin), its bounds, replay, the live feed, and the pure parts it is built on.
The page itself is driven in a real browser in test_inspector_page.py."""
import gzip
import hashlib
import json
import os
import socket
import sys
import types
import zlib

import gevent
import pytest
import requests

import helpers
from localtunnel.inspect import view
from localtunnel.inspect.capture import HEAD_ROOM, Capture
from localtunnel.inspect.replay import ReplayError, build_request
from localtunnel.wire.http11 import parse_request_head

BODY_LIMIT = 64 * 1024


@pytest.fixture
def inspected(server, procs, origin):
    """Our client with its inspector on a port of the test's own: (tunnel name, inspector URL, proc)."""
    port = helpers.free_port()
    proc, url = helpers.start_client("python", procs, server.port, origin, extra=[
        "--inspect", "127.0.0.1:%d" % port, "--inspect-body-limit", str(BODY_LIMIT), "--inspect-limit", "50"])
    assert proc.wait_for(r"inspector: (\S+)", 5).group(1) == "http://127.0.0.1:%d" % port
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    return name, "http://127.0.0.1:%d" % port, proc


def entries(base):
    return requests.get(base + "/api/requests", timeout=5).json()


def entry(base, number):
    return requests.get("%s/api/requests/%d" % (base, number), timeout=5).json()


def newest(base, path):
    """The newest finished entry for `path` (the client finishes it just after answering)."""
    found = []

    def finished():
        found[:] = [each for each in entries(base) if each["path"] == path and not each["pending"]]
        return bool(found)
    helpers.wait_until(finished, 5, "an entry for %s" % path)
    return entry(base, found[0]["id"])


@pytest.mark.deadline(90)
def test_the_api_shows_what_went_through_the_tunnel(server, inspected):
    name, base, _ = inspected
    assert helpers.visit(server.port, name, "/hello").text == "hello"
    got = newest(base, "/hello")
    assert got["method"] == "GET" and got["status"] == 200 and got["response"]["body"]["data"] == "hello"
    assert got["waited_ms"] is not None and got["duration_ms"] >= got["waited_ms"]
    assert got["request"]["head"].startswith("GET /hello HTTP/1.1\r\n")

    document = {"event": "push", "commits": [{"id": "abc123"}]}
    helpers.visit(server.port, name, "/echo", method="POST", json=document)
    posted = newest(base, "/echo")
    assert posted["request"]["body"]["kind"] == "json" and json.loads(posted["request"]["body"]["text"]) == document
    assert "\n  " in posted["request"]["body"]["text"]     # pretty-printed
    assert json.loads(posted["response"]["body"]["text"]) == document     # chunked, de-chunked for display

    assert helpers.visit(server.port, name, "/nope").status_code == 404
    assert newest(base, "/nope")["status"] == 404


@pytest.mark.deadline(90)
def test_a_64_mib_download_is_intact_and_its_capture_cut(server, inspected):
    name, base, _ = inspected
    size = 64 * 1024 * 1024
    got, digest = helpers.streamed_digest(helpers.visit(server.port, name, "/bytes?n=%d" % size, stream=True))
    assert got == size and digest == helpers.pattern_digest(size)
    body = newest(base, "/bytes?n=%d" % size)["response"]["body"]
    assert body["size"] == size and body["truncated"] and BODY_LIMIT <= body["kept"] <= BODY_LIMIT + HEAD_ROOM


@pytest.mark.deadline(90)
def test_replay_as_it_was_and_edited(server, inspected):
    name, base, _ = inspected
    helpers.visit(server.port, name, "/echo", method="POST", data=b"first")
    original = newest(base, "/echo")
    again = requests.post("%s/api/requests/%d/replay" % (base, original["id"]), timeout=10).json()
    assert again["replay_of"] == original["id"] and again["id"] != original["id"]
    assert again["status"] == 200 and again["response"]["body"]["data"] == "first"
    edited = requests.post("%s/api/requests/%d/replay" % (base, original["id"]), timeout=10, json={
        "path": "/echo?edited=1", "body": "second", "headers": [["Content-Type", "text/plain"], ["X-Mine", "yes"]]}).json()
    assert edited["path"] == "/echo?edited=1" and edited["response"]["body"]["data"] == "second"
    assert ["X-Mine", "yes"] in edited["request"]["headers"]
    listed = entries(base)
    assert [each["replay_of"] for each in listed[:2]] == [original["id"], original["id"]]
    bad = requests.post("%s/api/requests/%d/replay" % (base, original["id"]), timeout=10, json={"method": "GE T"})
    assert bad.status_code == 400 and "method" in bad.json()["message"]
    assert requests.post(base + "/api/requests/999999/replay", timeout=10).status_code == 404


@pytest.mark.deadline(60)
def test_the_feed_tells_a_page_of_each_request_as_it_happens(server, inspected):
    name, base, _ = inspected
    with requests.get(base + "/api/events", stream=True, timeout=10) as feed:
        lines = feed.iter_lines()
        assert next(lines) == b"retry: 2000"
        gevent.spawn(helpers.visit, server.port, name, "/hello?live")
        seen = []
        with gevent.Timeout(10):
            while not any(each.get("path") == "/hello?live" and not each["pending"] for each in seen):
                line = next(lines)
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:]))
    assert seen[0]["path"] == "/hello?live" and seen[0]["pending"]     # at its start, then its end
    assert requests.delete(base + "/api/requests", timeout=5).status_code == 204
    assert entries(base) == []


@pytest.mark.deadline(60)
def test_other_sites_pages_can_neither_read_nor_replay(server, inspected):
    """A page on evil.example that the user has open may send requests to 127.0.0.1:4040, and a
    DNS name rebound to 127.0.0.1 may even read the answers: both are refused."""
    name, base, _ = inspected
    helpers.visit(server.port, name, "/hello")
    number = newest(base, "/hello")["id"]
    port = int(base.rsplit(":", 1)[1])
    rebound = requests.get(base + "/api/requests", headers={"Host": "evil.example:%d" % port}, timeout=5)
    assert rebound.status_code == 403 and "hello" not in rebound.text
    forged = requests.post("%s/api/requests/%d/replay" % (base, number), headers={"Origin": "http://evil.example"},
                           timeout=5)
    assert forged.status_code == 403 and len(entries(base)) == 1      # nothing was replayed
    own = requests.post("%s/api/requests/%d/replay" % (base, number), timeout=10,
                        headers={"Origin": "http://127.0.0.1:%d" % port})
    assert own.status_code == 200 and requests.get(base.replace("127.0.0.1", "localhost") + "/api/requests",
                                                   timeout=5).status_code == 200


@pytest.mark.deadline(60)
def test_a_websocket_is_listed_with_its_handshake_and_no_frames(server, inspected):
    name, base, _ = inspected
    sock = helpers.ws_connect(server.port, "%s.localhost:%d" % (name, server.port))
    try:
        helpers.ws_send(sock, b"secret frame")
        assert helpers.ws_recv(sock) == (2, b"secret frame")
        listed = [each for each in entries(base) if each["path"] == "/ws"]
        assert listed and listed[0]["websocket"] and listed[0]["status"] == 101 and listed[0]["pending"]
        shown = entry(base, listed[0]["id"])
        assert "Upgrade" in shown["request"]["head"] and shown["response"]["head"].startswith("HTTP/1.1 101")
        assert "secret frame" not in json.dumps(shown)
    finally:
        sock.close()


@pytest.mark.deadline(120)
def test_memory_stays_bounded_under_a_64_mib_upload_and_many_requests(server, inspected):
    name, base, proc = inspected
    before = rss_kib(proc.popen.pid)
    size = 64 * 1024 * 1024
    body = os.urandom(size)
    answer = helpers.visit(server.port, name, "/digest", method="POST", data=body, timeout=60)
    assert answer.json() == {"bytes": size, "sha256": hashlib.sha256(body).hexdigest()}
    upload = newest(base, "/digest")["request"]["body"]
    assert upload["size"] == size and upload["truncated"] and upload["kept"] <= BODY_LIMIT + HEAD_ROOM
    with requests.Session() as session:
        for number in range(1500):
            assert helpers.visit(server.port, name, "/hello?n=%d" % number, session=session).status_code == 200
    listed = entries(base)
    assert len(listed) == 50 and listed[0]["path"] == "/hello?n=1499"     # the newest 50 (--inspect-limit)
    assert rss_kib(proc.popen.pid) - before < 24 * 1024, "the client grew by more than 24 MiB"


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.deadline(30)
def test_off_means_nothing_listens_and_print_requests_still_prints(server, procs, origin):
    proc, url = helpers.start_client("python", procs, server.port, origin, extra=["--inspect=off", "--print-requests"])
    helpers.wait_sockets(server.port, helpers.tunnel_name(url), 10)
    helpers.visit(server.port, helpers.tunnel_name(url), "/hello")
    proc.wait_for(r"GET /hello 200 \d+ ms", 5)
    assert "inspector:" not in proc.output


@pytest.mark.deadline(30)
def test_an_address_taken_or_beyond_loopback_is_said_plainly(server, procs, origin):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = procs(helpers.our_client_argv(server.port, origin, extra=[
            "--inspect", "127.0.0.1:%d" % taken.getsockname()[1]]))
        assert proc.wait(10) == 2 and "--inspect=HOST:PORT picks another" in proc.output
    port = helpers.free_port()
    proc, _ = helpers.start_client("python", procs, server.port, origin, extra=["--inspect", "0.0.0.0:%d" % port])
    proc.wait_for(r"warning: the inspector listens on http://0\.0\.0\.0:%d" % port, 5)
    bad = procs(helpers.our_client_argv(server.port, origin, extra=["--inspect", "4040"]))
    assert bad.wait(10) == 2 and "--inspect=4040: expected HOST:PORT" in bad.output


def test_the_default_port_taken_means_the_next_free_one(monkeypatch):
    sys.path.insert(0, helpers.ROOT)
    import lt_client
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(lt_client, "INSPECT_DEFAULT", ("127.0.0.1", port))
        options = types.SimpleNamespace(inspect=None, inspect_limit=10, inspect_body_limit=10, capture=None,
                                        inspector_url=None)
        assert lt_client.start_inspector(options) is None
        assert options.inspector_url.startswith("http://127.0.0.1:") and options.inspector_url != "http://127.0.0.1:%d" % port


# --- the pure parts -----------------------------------------------------------------------------

def fake_req(method=b"GET", target=b"/"):
    return types.SimpleNamespace(method=method, target=target)


def test_the_capture_keeps_the_newest_and_cuts_long_bodies():
    capture = Capture(limit=3, body_limit=10)
    for number in range(5):
        exchange = capture.begin(fake_req(target=b"/%d" % number))
        exchange.take_request(b"x" * (HEAD_ROOM + 50))
        exchange.take_response(memoryview(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 100))
        capture.finish(exchange, 200)
    kept = list(capture.newest_first())
    assert [each.target for each in kept] == [b"/4", b"/3", b"/2"]
    assert kept[0].request_size == HEAD_ROOM + 50 and kept[0].kept == (HEAD_ROOM + 10) + 119     # request cut, response whole
    assert all(type(chunk) is bytes for chunk in kept[0].response)     # no view pinning a buffer


def test_past_the_budget_the_oldest_lose_their_bodies_first():
    capture = Capture(limit=10, body_limit=1000, budget=2500)
    for number in range(4):
        exchange = capture.begin(fake_req())
        exchange.take_response(b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 1000)
        capture.finish(exchange, 200)
    evicted = [each.evicted for each in reversed(list(capture.newest_first()))]
    assert evicted == [True, True, False, False]
    assert capture.get(1).response == [b"HTTP/1.1 200 OK\r\n\r\n"]


def test_websocket_frames_are_not_captured():
    exchange = Capture().begin(fake_req())
    exchange.take_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    exchange.take_response(b"\x81\x02hi")
    exchange.take_request(b"\x81\x82....")
    assert exchange.upgraded and exchange.response == [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"]
    assert exchange.request == []


@pytest.mark.parametrize("fields, body, kind, check", [
    ({b"content-type": [b"application/json"]}, b'{"a":[1,2]}', "json", lambda v: v["text"] == '{\n  "a": [\n    1,\n    2\n  ]\n}'),
    ({b"content-type": [b"application/x-www-form-urlencoded"]}, b"a=1&b=two+words", "form",
     lambda v: v["form"] == [("a", "1"), ("b", "two words")]),
    ({b"content-type": [b"text/plain"]}, "héllo".encode(), "text", lambda v: v["text"] == "héllo"),
    ({b"content-type": [b"image/png"]}, b"\x89PNG\r\n\x1a\n", "image", lambda v: v["mime"] == "image/png"),
    ({}, bytes(range(256)) * 20, "binary", lambda v: v["hex"].startswith("00000000  00 01 02") and v["hex_cut"]),
    ({b"content-type": [b"application/json"], b"content-encoding": [b"gzip"]}, gzip.compress(b'{"z":1}'), "json",
     lambda v: v["base64"] and v["content_encoding"] == "gzip" and v["decoded_complete"]),
    ({b"content-encoding": [b"deflate"]}, zlib.compress(b"deflated"), "text", lambda v: v["text"] == "deflated"),
    ({b"transfer-encoding": [b"chunked"]}, b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", "text", lambda v: v["text"] == "abcde"),
])
def test_bodies_are_shown_as_they_were_meant(fields, body, kind, check):
    shown = view.body_view(fields, body, len(body))
    assert shown["kind"] == kind and check(shown), shown


def test_a_compression_bomb_is_decoded_only_so_far():
    bomb = gzip.compress(b"\0" * (64 << 20))
    shown = view.body_view({b"content-encoding": [b"gzip"]}, bomb, len(bomb))
    assert not shown["decoded_complete"] and shown["kind"] == "binary"


def captured(raw, size=None):
    exchange = Capture().begin(parse_request_head(raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n"))
    exchange.take_request(raw)
    if size is not None:
        exchange.request_size = size
    return exchange


def test_a_replay_is_the_request_again_with_its_edits():
    exchange = captured(b"POST /hook HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
                        b"3\r\nabc\r\n0\r\n\r\n")
    assert build_request(exchange, {}) == b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    assert build_request(exchange, {"method": "PUT", "path": "/x?y=1", "headers": [["A", "b"]], "body_base64": "AAE="}) == \
        b"PUT /x?y=1 HTTP/1.1\r\nHost: a\r\nA: b\r\nContent-Length: 2\r\n\r\n\x00\x01"     # Host kept
    for edits in ({"path": "no-slash"}, {"method": "G T"}, {"headers": [["Bad Name", "v"]]},
                  {"headers": [["A", "v\r\nInjected: 1"]]}, {"headers": "A: b"}, {"body_base64": "!!"}):
        with pytest.raises(ReplayError) as info:
            build_request(exchange, edits)
        assert info.value.status == 400


def test_a_body_not_kept_whole_must_be_given_to_replay():
    exchange = captured(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, size=200)
    with pytest.raises(ReplayError) as info:
        build_request(exchange, {})
    assert info.value.status == 409
    assert build_request(exchange, {"body": "given"}).endswith(b"Content-Length: 5\r\n\r\ngiven")
