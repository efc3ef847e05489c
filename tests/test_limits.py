"""Limits and faults of a server that faces the internet (issue #5): who may create tunnels and
how many, who may connect to a tunnel port, visitor and splice limits, bodies that stall or
break, clients that die, slow senders. Real loopback sockets; real clients where a client is
involved. Any 127/8 address is loopback, so "another address" is 127.0.0.2."""
import base64
import socket
import time

import gevent
import pytest

import helpers
from helpers import (FakeClient, get_from, new_tunnel, raw_exchange, sockets_of, start_client, status_of,
                     tunnel_name, visit, wait_until)

#: A whole exchange with the API: raw_exchange reads until the server closes.
STATUS_REQUEST = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def create(server, path="/?new", source="127.0.0.1", headers=None):
    """Ask the API for a tunnel from `source`."""
    return get_from(source, "http://127.0.0.1:%d%s" % (server.port, path), headers)


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def scripted_tunnel(server, count=1, handler=helpers.ok_handler):
    """A new tunnel and a FakeClient with `count` sockets answering with `handler`, all connected."""
    info = new_tunnel(server.port)
    client = FakeClient(info, count, handler=handler)
    wait_until(lambda: sockets_of(server, info["id"]) == count, 2, "%d tunnel sockets" % count)
    return info, client


def closed_unused(sock, timeout=2):
    """Whether the other side closes `sock` without sending anything."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# --- the creation token ---------------------------------------------------------------------

def test_without_the_token_creation_is_401_saying_how_to_pass_it(make_server):
    server = make_server(auth_token="s3cret")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": basic("user", "nope")}):
        answer = create(server, headers=headers)
        assert answer.status_code == 401, headers
        assert "--auth-token" in answer.json()["message"]
    assert len(server.registry) == 0
    assert create(server, "/named-one", headers={"Authorization": "Bearer s3cret"}).json()["id"] == "named-one"
    assert create(server, headers={"Authorization": basic("anyone", "s3cret")}).status_code == 200
    assert len(server.registry) == 2


@pytest.mark.node
def test_npm_client_passes_the_token_as_url_credentials(make_server, origin, procs):
    server = make_server(auth_token="s3cret")
    proc = procs([helpers.LT, "--host", "http://user:s3cret@localhost:%d" % server.port, "--port", str(origin)])
    name = tunnel_name(proc.wait_for(r"your url is: (\S+)", 15).group(1))
    helpers.wait_sockets(server.port, name, 10)
    assert visit(server.port, name, "/hello").text == "hello"


@pytest.mark.parametrize("how", ["flag", "environment", "url"])
def test_our_client_passes_the_token(make_server, origin, procs, how):
    server = make_server(auth_token="s3cret")
    argv = helpers.our_client_argv(server.port, origin, extra=["--auth-token", "s3cret"] if how == "flag" else [])
    if how == "url":
        argv[argv.index("-h") + 1] = "http://me:s3cret@localhost:%d" % server.port
    proc = procs(argv, env={"LT_AUTH_TOKEN": "s3cret"} if how == "environment" else {})
    name = tunnel_name(proc.wait_for(r"your url is: (\S+)", 15).group(1))
    helpers.wait_sockets(server.port, name, 10)
    assert visit(server.port, name, "/hello").text == "hello"


def test_our_client_without_the_token_says_what_to_do_and_exits_2(make_server, origin, procs):
    server = make_server(auth_token="s3cret")
    proc = procs(helpers.our_client_argv(server.port, origin, extra=["--auth-token", "wrong"]))
    assert proc.wait(15) == 2
    assert "needs a token" in proc.output and "--auth-token" in proc.output
    assert "Traceback" not in proc.output


# --- how many tunnels, how often --------------------------------------------------------------

def test_tunnel_requests_per_minute_past_the_limit_get_429_with_retry_after(make_server):
    server = make_server(new_per_minute=3)
    for _ in range(3):
        assert create(server).status_code == 200
    answer = create(server)
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert "at most 3 a minute" in answer.json()["message"]
    assert create(server, source="127.0.0.2").status_code == 200     # the limit is per address


def test_tunnels_per_address_and_per_server(make_server):
    server = make_server(max_tunnels_per_address=2, max_tunnels=3)
    mine = [create(server).json()["id"] for _ in range(2)]
    third = create(server)
    assert third.status_code == 429 and "holds 2 tunnels" in third.json()["message"]
    # Taking back one of its own names (a restarted client) replaces a tunnel, adds none.
    assert create(server, "/" + mine[0]).json()["id"] == mine[0]
    assert create(server, source="127.0.0.2").status_code == 200
    full = create(server, source="127.0.0.3")
    assert full.status_code == 503 and full.headers["Retry-After"] and "maximum of 3" in full.json()["message"]


def test_a_removed_tunnel_no_longer_counts_against_its_address(make_server):
    server = make_server(max_tunnels_per_address=1, connect_grace=0.3)
    create(server)
    assert create(server).status_code == 429
    wait_until(lambda: len(server.registry) == 0, 3, "the unserved tunnel to go")
    assert create(server).status_code == 200


@pytest.mark.node
@pytest.mark.deadline(40)
@pytest.mark.parametrize("kind", ["node", "python"])
def test_clients_refused_with_429_retry_until_they_get_a_tunnel(make_server, origin, procs, kind):
    server = make_server(max_tunnels_per_address=1, connect_grace=1.0)
    create(server)      # this address's one tunnel, never served: it goes after the connect grace
    proc, url = start_client(kind, procs, server.port, origin)     # waits up to 15 s for its URL
    assert proc.popen.poll() is None and "Traceback" not in proc.output
    helpers.wait_sockets(server.port, tunnel_name(url), 10)


# --- who may connect to a tunnel port ---------------------------------------------------------

def test_tunnel_port_takes_sockets_only_from_the_creator(make_server, caplog):
    server = make_server()
    info = new_tunnel(server.port)      # from 127.0.0.1
    stranger = socket.create_connection(("127.0.0.1", info["port"]), source_address=("127.0.0.2", 0))
    assert closed_unused(stranger)
    assert "refusing socket from 127.0.0.2: the tunnel belongs to 127.0.0.1" in caplog.text
    client = FakeClient(info, 1)
    wait_until(lambda: sockets_of(server, info["id"]) == 1, 2, "the creator's socket")
    assert visit(server.port, info["id"], "/mine").text == "GET /mine HTTP/1.1"
    client.close()


def test_the_address_check_can_be_turned_off_for_rotating_nat(make_server):
    server = make_server(check_client_address=False)
    info = new_tunnel(server.port)
    elsewhere = socket.create_connection(("127.0.0.1", info["port"]), source_address=("127.0.0.2", 0))
    wait_until(lambda: sockets_of(server, info["id"]) == 1, 2, "a socket from another address")
    elsewhere.close()


def test_the_creator_is_a_trusted_proxys_forwarded_for_never_an_untrusted_one(make_server):
    server = make_server()      # trusts 127.0.0.1, as a TLS front on this machine would be
    proxied = create(server, headers={"X-Forwarded-For": "127.0.0.2"}).json()
    assert server.registry.get(proxied["id"]).client_addr == "127.0.0.2"
    assert closed_unused(socket.create_connection(("127.0.0.1", proxied["port"])))
    real = socket.create_connection(("127.0.0.1", proxied["port"]), source_address=("127.0.0.2", 0))
    wait_until(lambda: sockets_of(server, proxied["id"]) == 1, 2, "the real client's socket")
    real.close()
    forged = create(server, source="127.0.0.3", headers={"X-Forwarded-For": "127.0.0.2"}).json()
    assert server.registry.get(forged["id"]).client_addr == "127.0.0.3"


def test_a_dual_stack_server_knows_ipv4_clients_and_proxies_by_one_address(make_server):
    # Listening on "::", IPv4 peers appear as ::ffff:127.0.0.1: still the trusted proxy, and
    # still the creator when its tunnel sockets arrive.
    server = make_server(address="::")
    proxied = create(server, headers={"X-Forwarded-For": "127.0.0.2"}).json()
    assert server.registry.get(proxied["id"]).client_addr == "127.0.0.2"
    own = create(server).json()
    assert server.registry.get(own["id"]).client_addr == "127.0.0.1"
    sock = socket.create_connection(("127.0.0.1", own["port"]))
    wait_until(lambda: sockets_of(server, own["id"]) == 1, 2, "the creator's socket")
    sock.close()


# --- visitors and splices ---------------------------------------------------------------------

def test_visitors_past_the_limit_get_503_at_once_and_room_comes_back(make_server):
    server = make_server(max_visitors=2)
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    wait_until(lambda: server.front.visitors == 2, 2, "two visitors")
    started = time.monotonic()
    raw = raw_exchange(server.port, STATUS_REQUEST)
    assert status_of(raw) == 503 and b"X-Localtunnel-Status: busy" in raw
    assert time.monotonic() - started < 1.5
    for sock in held:
        sock.close()
    wait_until(lambda: server.front.visitors == 0, 2, "the visitors to leave")
    assert status_of(raw_exchange(server.port, STATUS_REQUEST)) == 200


def reads_body_forever(sock, _head):
    """Read whatever comes, answer nothing, and let the client die at EOF."""
    while sock.recv(65536):
        pass
    return False


def pushes_then_falls_silent(sock, head):
    """Switch protocols, push 8 ticks 0.2 s apart, then say nothing until closed."""
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    for _ in range(8):
        sock.sendall(b"tick")
        gevent.sleep(0.2)
    return reads_body_forever(sock, head)


def test_a_splice_silent_both_ways_is_closed_after_the_idle_timeout(make_server):
    server = make_server(splice_idle_timeout=0.5)
    info, client = scripted_tunnel(server, handler=pushes_then_falls_silent)
    sock = helpers.ws_connect(server.port, "%s.localhost" % info["id"])
    got = b""
    while len(got) < 32:    # 1.6 s of one-way traffic: longer than the idle timeout, yet not idle
        data = sock.recv(64)
        assert data, "closed while the tunnel side was still talking"
        got += data
    silent_since = time.monotonic()
    assert helpers.read_all(sock) == b""
    assert 0.3 < time.monotonic() - silent_since < 2.0
    client.close()


# --- bodies that stall or break ---------------------------------------------------------------

def test_a_tunnel_silent_mid_response_is_cut_off_and_other_tunnels_carry_on(make_server):
    server = make_server(response_timeout=0.5)

    def half_then_silent(sock, _head):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
        gevent.sleep(30)

    silent, stuck = scripted_tunnel(server, handler=half_then_silent)
    good, fine = scripted_tunnel(server)
    waiting = gevent.spawn(raw_exchange, server.port, b"GET / HTTP/1.1\r\nHost: %s.localhost\r\n\r\n" % silent["id"].encode())
    gevent.sleep(0.1)
    assert visit(server.port, good["id"], "/ok").text == "GET /ok HTTP/1.1"    # while the other stalls
    raw = waiting.get(timeout=3)
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"only-part")
    wait_until(lambda: sockets_of(server, silent["id"]) == 0, 2, "the stalled socket to be dropped")
    stuck.close()
    fine.close()


def test_a_visitor_silent_mid_body_gets_504_not_a_hang(make_server):
    server = make_server(response_timeout=0.5)
    info, client = scripted_tunnel(server, handler=reads_body_forever)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: %s.localhost\r\nContent-Length: 100\r\n\r\nten bytes!" % info["id"].encode())
        started = time.monotonic()
        raw = helpers.read_all(sock)
    assert status_of(raw) == 504 and time.monotonic() - started < 3
    client.close()


@pytest.mark.parametrize("late", [False, True], ids=["with-the-head", "after-a-pause"])
def test_a_bad_chunk_size_is_400_at_once_and_the_tunnel_carries_on(server, late):
    info, client = scripted_tunnel(server, 2, handler=reads_body_forever)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: %s.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                     % info["id"].encode())
        if late:
            gevent.sleep(0.2)
        started = time.monotonic()
        sock.sendall(b"zz\r\nnot a chunk\r\n0\r\n\r\n")
        raw = helpers.read_all(sock)
    assert status_of(raw) == 400 and b"chunk" in raw and time.monotonic() - started < 1
    assert status_of(raw_exchange(server.port, STATUS_REQUEST)) == 200
    client.close()


# --- clients that die, senders that crawl -----------------------------------------------------

@pytest.mark.node
@pytest.mark.parametrize("kind", ["node", "python"])
def test_a_client_killed_with_sigkill_leaves_no_visitor_hanging_and_frees_its_name(make_server, origin, procs, kind):
    server = make_server(socket_wait=2.0, grace=1.0)
    proc, url = start_client(kind, procs, server.port, origin)
    name = tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    proc.signal(9)
    proc.wait(5)
    started = time.monotonic()
    answer = visit(server.port, name, "/hello", timeout=10)
    assert answer.status_code in (404, 502, 504), answer.status_code
    assert time.monotonic() - started < server.settings.socket_wait + 1
    wait_until(lambda: server.registry.get(name) is None, server.settings.grace + 2, "the name to be freed")
    assert create(server, "/" + name, source="127.0.0.2").json()["id"] == name


@pytest.mark.deadline(40)
def test_300_slow_senders_are_cut_at_the_head_limit_while_others_are_served(make_server):
    server = make_server(head_timeout=2.0)
    info, client = scripted_tunnel(server, 4)
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(300)]
    for sock in slow:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: %s.loc" % info["id"].encode())
    dripping = gevent.spawn(_drip, slow)      # a byte now and then, as slowloris does
    started = time.monotonic()
    for i in range(10):
        asked = time.monotonic()
        assert visit(server.port, info["id"], "/%d" % i).status_code == 200
        assert time.monotonic() - asked < 0.5
    answers = [helpers.read_all(sock) for sock in slow]
    assert all(status_of(raw) == 408 for raw in answers)
    assert time.monotonic() - started < server.settings.head_timeout + 2
    dripping.kill()
    client.close()


def _drip(socks):
    while True:
        for sock in socks:
            try:
                sock.sendall(b"a")
            except OSError:
                pass
        gevent.sleep(0.3)
