"""The least an HTTP-aware tunnel can do per request on gevent: the benchmark's second floor.

Our design shares a tunnel's sockets per request (PROTOCOL.md B4), so both ends must find where
each request and response ends; a bare splice (splice_relay.py) does not, and so does not
measure what this design must pay. This script does only that mandatory work, in the fewest
Python steps we could write: read a head, find its end and its Content-Length, borrow a tunnel
socket, send, read the response head and body by Content-Length, send, give the socket back. No
Host routing, no chunked bodies, no timeouts, no errors handled: a measuring stick, not a server.

  front FRONT_PORT TUNNEL_PORT   visitors on FRONT_PORT, tunnel sockets connect to TUNNEL_PORT
  back TUNNEL_PORT UPSTREAM_PORT SOCKETS   open SOCKETS tunnel sockets, each paired with one
                                           connection to the upstream, like a tunnel client
"""
from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402
from collections import deque  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

BUFSIZE = 65536


def read_message(sock, buf):
    """(head+body, rest of buf) of the next message with a Content-Length (or none), or (b"", b"")
    at EOF."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        data = sock.recv(BUFSIZE)
        if not data:
            return b"", b""
        buf += data
    end += 4
    at = buf.find(b"ontent-Length:", 0, end)
    size = int(buf[at + 14:buf.index(b"\r\n", at)]) if at >= 0 else 0
    while len(buf) < end + size:
        data = sock.recv(BUFSIZE)
        if not data:
            return b"", b""
        buf += data
    return buf[:end + size], buf[end + size:]


class Pool:
    """Free tunnel sockets, handed to the longest waiter first."""

    def __init__(self):
        self.free, self.waiters = deque(), deque()

    def get(self):
        if self.free:
            return self.free.popleft()
        waiter = [None, Event()]
        self.waiters.append(waiter)
        waiter[1].wait()
        return waiter[0]

    def put(self, sock):
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter[0] = sock
            waiter[1].set()
        else:
            self.free.append(sock)


def front(front_port, tunnel_port):
    pool = Pool()

    def visitor(sock, _addr):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while True:
                request, buf = read_message(sock, buf)
                if not request:
                    return
                ts, rest = pool.get()
                ts.sendall(request)
                response, rest = read_message(ts, rest)
                pool.put((ts, rest))
                sock.sendall(response)
        except OSError:
            pass    # the load generator hung up at the end of its run

    def tunnel_socket(sock, _addr):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pool.put((sock, b""))
        gevent.sleep(1e9)   # the pool owns it now; keep the greenlet (and the socket) alive

    StreamServer(("127.0.0.1", tunnel_port), tunnel_socket).start()
    StreamServer(("127.0.0.1", front_port), visitor).serve_forever()


def back(tunnel_port, upstream_port, sockets):
    def serve():
        ts = socket.create_connection(("127.0.0.1", tunnel_port))
        local = socket.create_connection(("127.0.0.1", upstream_port))
        for each in (ts, local):
            each.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = rest = b""
        while True:
            request, buf = read_message(ts, buf)
            if not request:
                return
            local.sendall(request)
            response, rest = read_message(local, rest)
            ts.sendall(response)

    gevent.joinall([gevent.spawn(serve) for _ in range(sockets)])


if __name__ == "__main__":
    if sys.argv[1] == "front":
        front(int(sys.argv[2]), int(sys.argv[3]))
    else:
        back(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
