"""Talking to a tunnel server on loopback, for the benchmarks and the tests alike: waiting for a
port, visiting a tunnel by its Host, waiting for a tunnel's sockets, and a small WebSocket client.
Everything connects to 127.0.0.1 and names the tunnel in the Host header: Python's resolver does not
resolve *.localhost. Needs gevent's patching (the callers do it first)."""
import base64
import os
import socket
import struct
import time

import gevent
import requests


def wait_listening(port, timeout=10):
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on port %d" % port)


def wait_sockets(server_port, name, count, timeout=10):
    """Wait until tunnel `name` has `count` connected sockets (per the API)."""
    with gevent.Timeout(timeout, AssertionError("tunnel %s never reached %d sockets" % (name, count))):
        while True:
            answer = requests.get("http://127.0.0.1:%d/api/tunnels/%s/status" % (server_port, name))
            if answer.status_code == 200 and answer.json()["connected_sockets"] >= count:
                return
            gevent.sleep(0.05)


def visit(port, name, path="/", method="GET", session=None, **kwargs):
    """A visitor request to tunnel `name` through the front port at 127.0.0.1:`port`."""
    headers = {"Host": "%s.localhost:%d" % (name, port)}
    headers.update(kwargs.pop("headers", {}))
    http = session or requests
    return http.request(method, "http://127.0.0.1:%d%s" % (port, path), headers=headers, **kwargs)


def ws_connect(port, host, path="/ws"):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        assert data, "connection closed during the WebSocket handshake: %r" % head
        head += data
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def ws_send(sock, payload, opcode=2):
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def _recv_exact(sock, n):
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        assert data, "connection closed inside a WebSocket frame"
        out += data
    return out


def ws_recv(sock):
    first, second = _recv_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", _recv_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    return first & 0x0F, _recv_exact(sock, length)
