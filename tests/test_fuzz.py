"""A bounded fuzz run of the front port: random bytes and mutated heads, to the API, to an
unknown tunnel and through a real tunnel (our client in front of the Node origin); and a hostile
mix, where honest visitors must each get exactly their own response or a clean error while
attackers and a misbehaving origin do their worst.

Whatever arrives, the server answers with an HTTP status line or closes cleanly, within its own
time limits; it never logs a traceback and keeps serving everyone else. The seed is fixed so a
failure can be replayed; FUZZ_SEED and FUZZ_CASES in the environment explore further.
"""
import logging
import os
import random
import socket
import time

import gevent
import gevent.pool
import pytest

import helpers
from helpers import start_client, tunnel_name, visit

pytestmark = pytest.mark.node

SEED = int(os.environ.get("FUZZ_SEED", "20261124"))
CASES = int(os.environ.get("FUZZ_CASES", "400"))
#: Cases in flight at once: enough to overlap the slow ones (those waiting for a time limit).
PARALLEL = 40
#: Every bound of the server under test is 1 s; an answer or a close must come well within this.
CASE_TIMEOUT = 6.0


def seeds(tunnel, port):
    """Valid requests of every shape the front port knows, to mutate."""
    host = b"%s.localhost:%d" % (tunnel.encode(), port)
    return [
        b"GET /hello HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"GET /hello HTTP/1.0\r\nHost: " + host + b"\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET http://" + host + b"/headers HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: " + host + b"\r\n\r\nGET /headers HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET /?new HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: no-such-tunnel.localhost\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
    ]


def mutate(rng, data):
    """One to three random edits of the kinds that break parsers: flipped, inserted, deleted or
    repeated bytes, cut-offs, odd line ends, and numbers swapped for hostile ones."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        edit = rng.randrange(8)
        at = rng.randrange(len(data) + 1)
        if edit == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif edit == 1:
            data[at:at] = os.urandom(rng.randint(1, 16))
        elif edit == 2:
            del data[at:at + rng.randint(1, 12)]
        elif edit == 3:
            data = data[:at]
        elif edit == 4:
            data[at:at] = rng.choice([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b" ", b"\t", b":", b"\x00"])
        elif edit == 5:
            line = rng.choice(bytes(data).split(b"\r\n") or [b""])
            data[at:at] = line + b"\r\n"
        elif edit == 6:
            data[at:at] = rng.choice([b"-1", b"99999999999999999999", b"0x10", b"1e3", b"+5", b" 5 ", b"ffffffffff"])
        else:
            data[at:at] = rng.choice([b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
                                      b"Host: other.localhost\r\n", b"Connection: close\r\n",
                                      b"Expect: 100-continue\r\n", b"Upgrade: websocket\r\n"])
    return bytes(data)


def cases(rng, templates):
    for i in range(CASES):
        if i % 10 == 0:
            yield os.urandom(rng.randint(1, 4096)), rng.random() < 0.5
        else:
            yield mutate(rng, rng.choice(templates)), rng.random() < 0.5


def exchange(port, data, half_close):
    """Send `data`, maybe half-close, and read until the server closes. Returns what came back;
    raises socket.timeout if the server neither answers nor closes in time."""
    with socket.create_connection(("127.0.0.1", port), timeout=CASE_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""      # the server already answered and closed: read what it said
        return helpers.read_all(sock)


def check(port, data, half_close):
    started = time.monotonic()
    try:
        raw = exchange(port, data, half_close)
    except socket.timeout:
        raise AssertionError("no answer and no close within %g s for %r" % (CASE_TIMEOUT, data[:300])) from None
    assert raw == b"" or raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), (data[:300], raw[:300])
    if raw:
        status = helpers.status_of(raw)
        assert status is not None and 100 <= status < 600, (data[:300], raw[:300])
    return time.monotonic() - started


@pytest.mark.deadline(120)
def test_random_and_mutated_heads_get_an_answer_or_a_clean_close(make_server, procs, capfd, caplog):
    # The run asks for many tunnels on purpose (mutated ?new requests): lift the admission limits.
    server = make_server(head_timeout=1.0, response_timeout=1.0, keepalive_timeout=1.0, socket_wait=1.0,
                         splice_idle_timeout=1.0, body_settle=0.2, new_per_minute=100000,
                         max_tunnels_per_address=100000)
    # An origin of its own: fuzzed requests reach it too, and the session's shared one must not
    # be disturbed by them.
    origin = procs(["node", os.path.join(helpers.ROOT, "tests", "node", "origin.js")])
    origin_port = int(origin.wait_for(r"listening (\d+)", 15).group(1))
    client, url = start_client("python", procs, server.port, origin_port)
    name = tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    rng = random.Random(SEED)
    pending = list(cases(rng, seeds(name, server.port)))
    with caplog.at_level(logging.WARNING):
        while pending:
            batch, pending = pending[:PARALLEL], pending[PARALLEL:]
            jobs = [gevent.spawn(check, server.port, data, half) for data, half in batch]
            gevent.joinall(jobs, raise_error=True)
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # Still serving, through the same tunnel and client.
    assert origin.popen.poll() is None, "the origin died:\n" + origin.output
    assert visit(server.port, name, "/hello", timeout=5).text == "hello", client.output
    assert visit(server.port, "x", "/", timeout=5).status_code == 404


# --- a hostile mix: honest visitors among attackers and a misbehaving origin ------------------

HOSTILE_CASES = int(os.environ.get("FUZZ_HOSTILE_CASES", "80"))
HONEST_VISITORS, HONEST_REQUESTS = 6, 30


def misbehaving_origin(rng):
    """An origin that answers /ok-ID with ID; /evil-ID with ID plus random bytes in the same
    write (a forged response or garbage); /big-ID with 20 MB; /tiny-ID with 100,000 one-byte
    chunks. It reads every request body to its end first, as most origins do."""
    def answer(request):
        kind, _, ident = request.target.lstrip(b"/").partition(b"-")
        return _answer(kind, ident, rng)

    return helpers.scripted_origin(answer)


def _answer(kind, ident, rng):
    if kind == b"big":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 20971520\r\n\r\n" + b"b" * 20971520
    if kind == b"tiny":
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nt\r\n" * 100000 + b"0\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ident), ident)
    if kind != b"evil":
        return ok
    return ok + rng.choice([b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSTOLEN", os.urandom(rng.randint(1, 64)),
                            b"HTTP/1.1 101 Switching Protocols\r\n\r\n", b"\r\n"])


def attack(port, host, rng):
    """One hostile visitor: the origin's misbehaviours, tiny-chunk floods, bodies cut short,
    responses never read, smuggled requests."""
    ident = b"%d" % rng.randrange(10 ** 9)
    shape = rng.randrange(6)
    if shape == 0:
        data = b"GET /evil-%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (ident, host)
    elif shape == 1:
        data = (b"POST /ok-%s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % (ident, host)
                + b"1\r\nx\r\n" * rng.randint(1000, 50000) + b"0\r\n\r\n")
    elif shape == 2:
        data = b"POST /ok-%s HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\nshort" % (ident, host)
    elif shape == 3:
        data = b"GET /big-%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (ident, host)
    elif shape == 4:
        smuggled = b"GET /ok-SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
        data = b"GET /ok-%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s" % (ident, host, len(smuggled), smuggled)
    else:
        data = b"GET /tiny-%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (ident, host)
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)) as sock:
        try:
            sock.sendall(data)
            gevent.sleep(rng.random() * 0.5)    # then read a little, or nothing, and leave
            if rng.random() < 0.5:
                sock.recv(rng.choice([1, 4096]))
        except OSError:
            pass


def honest(port, name, worker):
    """Sequential keep-alive GETs for unique ids; returns every answer that was not exactly ours
    and was not one of our own clean error pages."""
    bad = []
    with helpers.session_from("127.0.0.3") as session:
        for i in range(HONEST_REQUESTS):
            ident = "h%d-%d" % (worker, i)
            answer = visit(port, name, "/ok-" + ident, session=session, timeout=15)
            if answer.text == ident:
                continue
            if answer.status_code in (502, 504) and "X-Localtunnel-Status" in answer.headers:
                continue    # a clean error: allowed, and counted below
            bad.append((ident, answer.status_code, answer.text[:60]))
    return bad


@pytest.mark.deadline(120)
@pytest.mark.parametrize("kind", ["python", "node"])
def test_hostile_mix_every_visitor_gets_its_own_response_or_a_clean_error(make_server, procs, kind):
    server = make_server(response_timeout=2.0, socket_wait=5.0, head_timeout=2.0)
    rng = random.Random(SEED)
    origin = misbehaving_origin(random.Random(SEED + 1))
    try:
        _, url = start_client(kind, procs, server.port, origin.server_port)
        name = tunnel_name(url)
        helpers.wait_sockets(server.port, name, 10)
        host = b"%s.localhost:%d" % (name.encode(), server.port)
        attackers = gevent.pool.Pool(12)
        for _ in range(HOSTILE_CASES):
            attackers.spawn(attack, server.port, host, random.Random(rng.random()))
        honest_runs = [gevent.spawn(honest, server.port, name, w) for w in range(HONEST_VISITORS)]
        gevent.joinall(honest_runs, raise_error=True)
        attackers.join(raise_error=True)
        assert [bad for run in honest_runs for bad in run.value] == []
        # Afterwards the tunnel serves as before.
        assert visit(server.port, name, "/ok-after", timeout=10).text == "after"
    finally:
        origin.stop()
