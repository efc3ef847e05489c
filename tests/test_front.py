"""The public port: routing by Host, the API on the root host, head limits, hostile input, and
what the front changes in a request on its way to the tunnel."""
import json
import os
import socket
import time

import gevent
import pytest
import requests

import helpers
from helpers import FakeClient, echo_head_handler, new_tunnel, raw_exchange, status_of, visit


@pytest.fixture
def echo_tunnel(server):
    info = new_tunnel(server.port)
    client = FakeClient(info, 4, handler=echo_head_handler)
    helpers.wait_sockets(server.port, info["id"], 4)
    yield info["id"]
    client.close()


# --- the API on the root host -------------------------------------------------------------

def api(server, path, **kwargs):
    return requests.get("http://127.0.0.1:%d%s" % (server.port, path),
                        headers={"Host": "localhost:%d" % server.port}, allow_redirects=False, **kwargs)


def test_new_tunnel_answer_matches_the_node_server(server):
    answer = api(server, "/?new")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    info = json.loads(answer.text)
    assert list(info) == ["id", "port", "max_conn_count", "url"]
    assert info["url"] == "http://%s.localhost:%d" % (info["id"], server.port)
    assert info["max_conn_count"] == 10 and info["port"] > 1023
    assert answer.text == json.dumps(info, separators=(",", ":"))


@pytest.mark.parametrize("path", ["/?new=1", "/?x&new", "/?new="])
def test_any_new_key_in_the_root_query_means_a_random_name(server, path):
    assert api(server, path).status_code == 200


def test_any_method_creates_like_the_reference(server):
    answer = requests.post("http://127.0.0.1:%d/?new" % server.port, headers={"Host": "localhost"})
    assert answer.status_code == 200 and "port" in answer.json()


def test_root_without_new_redirects_to_the_landing_page(make_server):
    server = make_server(landing="https://example.org/tunnels")
    answer = api(server, "/")
    assert answer.status_code == 302 and answer.headers["Location"] == "https://example.org/tunnels"


def test_status_endpoints(server):
    info = new_tunnel(server.port)
    status = api(server, "/api/status").json()
    assert status["tunnels"] == 1 and status["mem"]["rss"] > 0
    assert api(server, "/api/tunnels/%s/status" % info["id"]).json() == {"connected_sockets": 0}
    missing = api(server, "/api/tunnels/nobody-here/status")
    assert missing.status_code == 404 and missing.text == "Not Found"


@pytest.mark.parametrize("path", ["/foo/", "/foo/bar", "/api/nothing"])
def test_other_paths_are_404(server, path):
    assert api(server, path).status_code == 404


def test_api_is_served_for_an_ip_literal_host(server):
    answer = requests.get("http://127.0.0.1:%d/?new" % server.port)   # Host: 127.0.0.1:port
    assert answer.json()["url"].endswith(".127.0.0.1:%d" % server.port)


# --- routing and errors ---------------------------------------------------------------------

def test_unknown_tunnel_is_404_with_advice(server):
    answer = visit(server.port, "not-there", "/")
    assert answer.status_code == 404
    assert answer.headers["X-Localtunnel-Status"] == "no-such-tunnel"
    assert "--subdomain not-there" in answer.text


def test_no_host_is_400(server):
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")
    assert status_of(raw) == 400 and b"no Host header" in raw


def test_duplicate_host_is_400(server):
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n")
    assert status_of(raw) == 400


def test_oversized_head_is_431(make_server):
    server = make_server(head_limit=1024)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x.localhost\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
    assert status_of(raw) == 431


def test_slow_head_is_408_and_does_not_block_others(make_server):
    server = make_server(head_timeout=0.5)
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x.loc")
    started = time.monotonic()
    assert api(server, "/api/status").status_code == 200       # served while the slow one waits
    assert time.monotonic() - started < 0.3
    raw = helpers.read_all(slow)
    assert status_of(raw) == 408
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("data", [
    os.urandom(2000) + b"\r\n\r\n",
    b"\x00\x01\x02\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    b"GET / HTTP/3.0\r\nHost: localhost\r\n\r\n",
])
def test_hostile_heads_get_a_clear_4xx_or_505_and_the_server_keeps_serving(server, data):
    raw = raw_exchange(server.port, data)
    assert raw == b"" or 400 <= status_of(raw) < 506
    assert api(server, "/api/status").status_code == 200


def test_a_client_that_connects_and_leaves_costs_nothing(server):
    for _ in range(20):
        socket.create_connection(("127.0.0.1", server.port)).close()
    assert api(server, "/api/status").status_code == 200


# --- what reaches the tunnel -------------------------------------------------------------------

def head_seen_by_tunnel(server, name, raw_request):
    raw = raw_exchange(server.port, raw_request)
    assert status_of(raw) == 200, raw
    return raw.split(b"\r\n\r\n", 1)[1]


def test_forwarded_headers_are_added(echo_tunnel, server):
    seen = head_seen_by_tunnel(server, echo_tunnel, b"GET /p HTTP/1.1\r\nHost: %s.localhost\r\n"
                               b"Connection: close\r\n\r\n" % echo_tunnel.encode())
    assert b"X-Forwarded-For: 127.0.0.1\r\n" in seen
    assert b"X-Forwarded-Proto: http\r\n" in seen
    assert b"X-Forwarded-Host: %s.localhost\r\n" % echo_tunnel.encode() in seen


def test_forwarded_headers_from_an_untrusted_sender_are_replaced(make_server):
    server = make_server(trusted_proxies=frozenset())
    info = new_tunnel(server.port)
    client = FakeClient(info, 1, handler=echo_head_handler)
    helpers.wait_sockets(server.port, info["id"], 1)
    seen = head_seen_by_tunnel(server, info["id"], b"GET / HTTP/1.1\r\nHost: %s.localhost\r\n"
                               b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
                               b"Connection: close\r\n\r\n" % info["id"].encode())
    assert b"6.6.6.6" not in seen and b"X-Forwarded-Proto: http\r\n" in seen
    client.close()


def test_forwarded_headers_from_a_trusted_proxy_are_extended(echo_tunnel, server):
    seen = head_seen_by_tunnel(server, echo_tunnel, b"GET / HTTP/1.1\r\nHost: %s.localhost\r\n"
                               b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
                               b"Connection: close\r\n\r\n" % echo_tunnel.encode())
    assert b"X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n" in seen
    assert b"X-Forwarded-Proto: https\r\n" in seen


def test_a_trusted_l4_balancer_names_the_visitor_in_a_proxy_line(echo_tunnel, server):
    """An L4 balancer (HAProxy `send-proxy`) cannot add X-Forwarded-For; from --trusted-proxies
    its PROXY line names the visitor instead, whose address then counts as theirs."""
    request = b"GET / HTTP/1.1\r\nHost: %s.localhost\r\nConnection: close\r\n\r\n" % echo_tunnel.encode()
    seen = head_seen_by_tunnel(server, echo_tunnel, b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n" + request)
    assert b"X-Forwarded-For: 198.51.100.7\r\n" in seen
    assert b"X-Forwarded-For: 127.0.0.1\r\n" in head_seen_by_tunnel(server, echo_tunnel, b"PROXY UNKNOWN\r\n" + request)
    # From anyone else it is no HTTP: a 400, and nothing reaches the tunnel.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n" + request)
        assert status_of(helpers.read_all(sock)) == 400


def test_visitor_connection_close_is_hop_by_hop(echo_tunnel, server):
    seen = head_seen_by_tunnel(server, echo_tunnel, b"GET / HTTP/1.1\r\nHost: %s.localhost\r\n"
                               b"Connection: close\r\nKeep-Alive: timeout=5\r\n\r\n" % echo_tunnel.encode())
    assert b"Connection" not in seen and b"Keep-Alive" not in seen


def test_http_1_0_visitor_is_served_and_the_tunnel_socket_kept(echo_tunnel, server):
    seen = head_seen_by_tunnel(server, echo_tunnel, b"GET /old HTTP/1.0\r\nHost: %s.localhost\r\n\r\n"
                               % echo_tunnel.encode())
    assert seen.startswith(b"GET /old HTTP/1.0\r\n") and b"Connection: keep-alive\r\n" in seen


def test_absolute_form_target_routes_by_its_authority_and_arrives_in_origin_form(echo_tunnel, server):
    # The Host a sender adds must not reach the origin beside the authority we routed by.
    seen = head_seen_by_tunnel(server, echo_tunnel, b"GET http://%s.localhost/abs HTTP/1.1\r\n"
                               b"Host: evil.example\r\nConnection: close\r\n\r\n" % echo_tunnel.encode())
    assert seen.startswith(b"GET /abs HTTP/1.1\r\nHost: %s.localhost\r\n" % echo_tunnel.encode())
    assert b"evil.example" not in seen


def test_pipelined_requests_are_answered_in_order(echo_tunnel, server):
    host = b"Host: %s.localhost\r\n" % echo_tunnel.encode()
    raw = raw_exchange(server.port, b"GET /one HTTP/1.1\r\n" + host + b"\r\n" +
                       b"GET /two HTTP/1.1\r\n" + host + b"\r\n" +
                       b"GET /three HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert raw.index(b"GET /one") < raw.index(b"GET /two") < raw.index(b"GET /three")


def test_request_body_passes_unmodified(server):
    info = new_tunnel(server.port)

    def body_echo(sock, head):
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = b""
        while len(body) < length:
            body += sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    client = FakeClient(info, 1, handler=body_echo)
    helpers.wait_sockets(server.port, info["id"], 1)
    payload = os.urandom(300000)
    assert visit(server.port, info["id"], "/", method="PUT", data=payload).content == payload
    client.close()


def test_keep_alive_visitor_idle_timeout_closes_quietly(make_server):
    server = make_server(keepalive_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        started = time.monotonic()
        raw = helpers.read_all(sock)
    assert status_of(raw) == 200 and raw.count(b"HTTP/1.1") == 1
    assert 0.25 < time.monotonic() - started < 2


def test_blank_lines_after_a_request_do_not_escape_the_idle_bound(make_server):
    # Found by the fuzz run: trailing CRLFs once made the next head wait with no bound at all.
    server = make_server(keepalive_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n\r\n\r\n\r\n")
        started = time.monotonic()
        dripping = gevent.spawn(_drip_blank_lines, sock)
        raw = helpers.read_all(sock)
        dripping.kill()
    assert status_of(raw) == 200 and raw.count(b"HTTP/1.1") == 1
    assert time.monotonic() - started < 2


def _drip_blank_lines(sock):
    while True:
        gevent.sleep(0.1)
        sock.sendall(b"\r\n")


def test_stop_answers_and_closes_everything(make_server):
    server = make_server()
    info = new_tunnel(server.port)
    client = FakeClient(info, 2)
    helpers.wait_sockets(server.port, info["id"], 2)
    idle_visitor = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    idle_visitor.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(idle_visitor.recv(65536)) == 200       # and now it idles, kept alive
    server.stop()
    # The fake client's readers end when their sockets see EOF; so does the idle visitor.
    assert gevent.joinall(client.workers, timeout=2) and all(w.dead for w in client.workers)
    assert helpers.read_all(idle_visitor) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
    gevent.sleep(0)


def test_visitor_asking_to_close_is_told_the_connection_closes(echo_tunnel, server):
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: %s.localhost\r\nConnection: close\r\n\r\n"
                       % echo_tunnel.encode())
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert status_of(raw) == 200 and head.endswith(b"\r\nConnection: close")
