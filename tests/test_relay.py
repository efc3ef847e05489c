"""relay.py's reuse checks on real socket pairs: what a Reader knows about the kernel's buffer
after a recv, and what InputProbe sees without reading."""
import socket

from localtunnel import relay


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
