"""A bare gevent relay for the benchmark's floor: accept, connect upstream, splice bytes.

No HTTP parsing and no shared tunnel sockets: what remains is what gevent and the kernel cost for
one more loopback hop. Usage: python bench/splice_relay.py LISTEN_PORT UPSTREAM_PORT
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from localtunnel.transfer.relay import Reader, splice  # noqa: E402


def serve(listen_port, upstream_port):
    def handle(sock, _addr):
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        for each in (sock, upstream):
            each.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            splice(Reader(sock), Reader(upstream))
        finally:
            upstream.close()

    StreamServer(("127.0.0.1", listen_port), handle).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
