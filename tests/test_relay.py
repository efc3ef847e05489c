"""relay.py on real sockets: what a Reader knows about the kernel's buffer after a recv, what
InputProbe sees without reading, and long bodies moved with splice(2)."""
import os
import socket
import time

import gevent
import pytest

from localtunnel.transfer import relay
from localtunnel.transfer.deadlines import Deadlines
from localtunnel.wire.framing import Fixed


def test_a_recv_that_comes_back_short_emptied_the_kernel_buffer():
    a, b = socket.socketpair()
    with a, b:
        reader = relay.Reader(a)
        b.sendall(b"x" * 10)
        assert reader.recv() == b"x" * 10 and reader.drained
        b.sendall(b"y" * (relay.BUFSIZE + 10))
        assert len(reader.recv()) == relay.BUFSIZE and not reader.drained    # more may wait
        assert reader.recv() == b"y" * 10 and reader.drained


def test_input_probe_sees_bytes_and_eof_without_reading_them():
    a, b = socket.socketpair()
    with a:
        probe = relay.InputProbe(a)
        assert not probe.has_input()
        b.sendall(b"z")
        assert probe.has_input() and a.recv(1) == b"z"
        assert not probe.has_input()
        b.close()
        assert probe.has_input() and a.recv(1) == b""   # EOF counts: a closed peer


def _tcp_pair():
    """Two ends of a TCP connection on loopback: splice(2) is what bodies take between sockets."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def _drain(sock, into):
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        into.append(data)


def test_a_long_fixed_body_is_spliced_exactly_to_its_end(monkeypatch):
    # 3 MiB goes through splice(2); the next message behind it must stay for the next read.
    spliced = []
    real_splice_in = relay._splice_in
    monkeypatch.setattr(relay, "_splice_in", lambda *args: spliced.append(real_splice_in(*args)) or spliced[-1])
    body = os.urandom(3 * relay.SPLICE_AT_LEAST)
    sender, src_sock = _tcp_pair()
    dst_sock, receiver = _tcp_pair()
    got = []
    drain = gevent.spawn(_drain, receiver, got)
    feed = gevent.spawn(sender.sendall, body + b"NEXT MESSAGE")
    src, framer = relay.Reader(src_sock, b"x" * 10), Fixed(10 + len(body))
    complete, sent = relay.copy_body(src, framer, dst_sock, prefix=b"HEAD")
    feed.join()
    dst_sock.close()
    drain.join(timeout=5)
    assert (complete, sent, framer.done) == (True, 4 + 10 + len(body), True)
    assert b"".join(got) == b"HEAD" + b"x" * 10 + body
    assert src.recv() == b"NEXT MESSAGE" and not src.buf
    assert sum(spliced) == len(body)    # every byte after the read-ahead went by splice(2)
    for sock in (sender, src_sock, receiver):
        sock.close()


def test_a_spliced_body_cut_off_by_its_sender_is_incomplete():
    sender, src_sock = _tcp_pair()
    dst_sock, receiver = _tcp_pair()
    gevent.spawn(_drain, receiver, [])
    sender.sendall(b"y" * relay.SPLICE_AT_LEAST)
    sender.close()
    complete, sent = relay.copy_body(relay.Reader(src_sock), Fixed(2 * relay.SPLICE_AT_LEAST), dst_sock)
    assert (complete, sent) == (False, relay.SPLICE_AT_LEAST)
    for sock in (src_sock, dst_sock, receiver):
        sock.close()


class _Stalled(Exception):
    pass


def test_a_spliced_body_to_a_reader_that_stopped_is_bounded():
    # The receiver never reads: the send side of the splice must give up within its bound.
    sender, src_sock = _tcp_pair()
    dst_sock, receiver = _tcp_pair()
    feed = gevent.spawn(sender.sendall, b"z" * (16 * relay.SPLICE_AT_LEAST))
    deadlines = Deadlines(0.02)
    started = time.monotonic()
    with pytest.raises(_Stalled):
        relay.copy_body(relay.Reader(src_sock), Fixed(16 * relay.SPLICE_AT_LEAST), dst_sock,
                        bound=lambda: deadlines.bound(0.3, _Stalled))
    assert time.monotonic() - started < 3
    feed.kill()
    for sock in (sender, src_sock, dst_sock, receiver):
        sock.close()


def test_a_tee_sees_the_body_until_it_is_full_then_the_rest_is_spliced_and_counted():
    """The inspector's Tee: the first bytes go through it (it keeps them), and once it wants
    no more the kernel splices the rest, which it is told the size of. Every byte arrives."""
    body = os.urandom(4 * relay.SPLICE_AT_LEAST)
    sender, src_sock = _tcp_pair()
    dst_sock, receiver = _tcp_pair()
    got, seen, skipped = [], [], []
    drain = gevent.spawn(_drain, receiver, got)
    feed = gevent.spawn(sender.sendall, body)
    tee = relay.Tee(dst_sock, seen.append, lambda: sum(map(len, seen)) >= relay.SPLICE_AT_LEAST, skipped.append)
    complete, sent = relay.copy_body(relay.Reader(src_sock), Fixed(len(body)), tee)
    feed.join()
    dst_sock.close()
    drain.join(timeout=5)
    assert complete and sent == len(body) and b"".join(got) == body
    taken = sum(map(len, seen))
    assert relay.SPLICE_AT_LEAST <= taken < len(body) and taken + sum(skipped) == len(body)
    assert b"".join(bytes(piece) for piece in seen) == body[:taken]
    for sock in (sender, src_sock, receiver):
        sock.close()


def _splice_rig(wrap):
    """Two TCP connections spliced in a greenlet, as a WebSocket or a handed-over visitor is:
    (outer end of the first, outer end of the second, the splice's greenlet, the Readers).
    `wrap` makes the spliced end of the second a Tee, which takes the greenlet-per-direction
    path (as TLS does); plain sockets take the event loop's callbacks."""
    left_outer, left_inner = _tcp_pair()
    right_inner, right_outer = _tcp_pair()
    left = relay.Reader(left_inner, b"read-ahead|")
    right = relay.Reader(relay.Tee(right_inner, lambda data: None) if wrap else right_inner)
    splicer = gevent.spawn(relay.splice, left, right, 5.0, 0.5)
    return left_outer, right_outer, splicer, (left_inner, right_inner)


@pytest.mark.parametrize("wrap", [False, True], ids=["callbacks", "greenlets"])
def test_a_splice_moves_both_ways_exactly_and_half_closes(wrap):
    left, right, splicer, inner = _splice_rig(wrap)
    try:
        # The read-ahead goes first, then 16 MiB to a reader that starts late: the sender's
        # buffers fill, and the splice must wait for room without losing or reordering a byte.
        body = os.urandom(16 << 20)
        sender = gevent.spawn(left.sendall, body)
        gevent.sleep(0.3)
        got = []
        right.settimeout(5)
        while sum(map(len, got)) < len(body) + len(b"read-ahead|"):
            got.append(right.recv(1 << 20))
        assert b"".join(got) == b"read-ahead|" + body
        sender.get(timeout=5)
        # The other way, then one side ends: the other sees EOF, and can still answer.
        right.sendall(b"pong")
        left.settimeout(5)
        assert left.recv(10) == b"pong"
        left.shutdown(socket.SHUT_WR)
        assert right.recv(10) == b""            # the left's FIN, passed on as a half-close
        right.sendall(b"last words")
        assert left.recv(20) == b"last words"   # the other direction still runs
        right.close()
        assert left.recv(10) == b""
        splicer.get(timeout=5)                  # both directions ended: the splice returns
    finally:
        gevent.killall([splicer])
        for sock in (left, right) + inner:
            sock.close()


@pytest.mark.parametrize("wrap", [False, True], ids=["callbacks", "greenlets"])
def test_a_splice_that_goes_silent_ends_after_its_idle_bound(wrap):
    left, right, splicer, inner = _splice_rig(wrap)
    try:
        right.settimeout(5)
        assert right.recv(20) == b"read-ahead|"
        started = time.monotonic()
        splicer.get(timeout=10)     # nothing moves: over after idle (5 s) plus the loop's wake-up
        assert 4.5 < time.monotonic() - started < 6.5
        for sock in inner:
            sock.close()                # as callers do once it returns
        assert right.recv(10) == b""
    finally:
        gevent.killall([splicer])
        for sock in (left, right) + inner:
            sock.close()
