"""What one proxied request costs in our own Python, with the network taken out.

End-to-end runs on this machine drift by a quarter within a minute, so a change worth 5% cannot
be seen in them. This drives the server's and the client's per-request code over in-memory
sockets (every recv returns a whole head, every send succeeds, a tunnel socket is always free):
no syscalls, no waits, no event loop, so the figure moves only with the code. It is the part of
each process's CPU per request that our code controls; the rest is the kernel and gevent.

Usage: .venv/bin/python bench/python_path.py [--requests N] [--profile]
To compare two trees, run each a few times, alternately: a busy spell can still cost one run.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, ROOT)

import lt_client  # noqa: E402
from localtunnel.inspect.capture import Capture  # noqa: E402
from localtunnel.transfer import relay  # noqa: E402
from localtunnel.server.config import Settings  # noqa: E402
from localtunnel.transfer.deadlines import Deadlines  # noqa: E402
from localtunnel.server.root import Server  # noqa: E402

#: What wrk sends, what our server forwards, and what nginx answers in the keep-alive scenario.
VISITOR_REQUEST = b"GET /1k HTTP/1.1\r\nHost: bench.localhost:18080\r\n\r\n"
FORWARDED_REQUEST = (b"GET /1k HTTP/1.1\r\nHost: bench.localhost:18080\r\nX-Forwarded-For: 127.0.0.1\r\n"
                     b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: bench.localhost:18080\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 20:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
            b"Last-Modified: Tue, 24 Nov 2026 19:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"6743b5c0-400\"\r\nAccept-Ranges: bytes\r\n\r\n" + b"x" * 1024)


class MemorySocket:
    """Answers every recv with the same message, `count` times, then EOF; swallows sends."""

    def __init__(self, message, count, sent=None):
        self.message, self.count = message, count
        self.sent = sent    # a list to keep what is sent in, when checking the path

    def recv(self, _size):
        if not self.count:
            return b""
        self.count -= 1
        return self.message

    def sendall(self, data):
        if self.sent is not None:
            self.sent.append(bytes(data))

    # relay.send_all's fast path on a plain socket: one raw send that takes everything, as the
    # kernel does while there is buffer room.
    @property
    def _sock(self):
        return self

    def send(self, data):
        self.sendall(data)
        return len(data)

    def setsockopt(self, *_args):
        pass

    def close(self):
        pass


relay._PLAIN_SOCKET = MemorySocket     # take the path real sockets take (see send above)


def server_path(requests, sent=None):
    """Front._handle for one visitor connection carrying `requests` requests."""
    server = Server(Settings(domain="localhost", address="127.0.0.1", port=0))
    ts = types.SimpleNamespace(reader=relay.Reader(MemorySocket(RESPONSE, 10 ** 12)))
    server.registry._tunnels["bench"] = types.SimpleNamespace(
        id="bench", max_sockets=10, gate=None, checkout=lambda _timeout, _visitor=None: ts, release=lambda _ts: None,
        drop=lambda _ts: None)
    return lambda: server.front._handle(MemorySocket(VISITOR_REQUEST, requests, sent), ("127.0.0.1", 40000))


def client_path(requests, sent=None, capture=None):
    """lt_client.serve_tunnel_socket for one tunnel socket carrying `requests` requests, with
    --local-host set as in the benchmark (the Host header is rewritten)."""
    options = types.SimpleNamespace(host_header=b"127.0.0.1", print_requests=False, capture=capture,
                                    limits=lt_client.local_limits(Deadlines(0.1)),
                                    local_host="127.0.0.1", port=80, tls=None)
    local = KeptAliveLocal(options, relay.Reader(MemorySocket(RESPONSE, 10 ** 12)))
    return lambda: lt_client.serve_tunnel_socket(MemorySocket(FORWARDED_REQUEST, requests, sent), options, local)


def inspected_client_path(requests, sent=None):
    """client_path with the request inspector capturing (its default, 500 kept)."""
    return client_path(requests, sent, Capture())


class KeptAliveLocal(lt_client.Local):
    """The client's own Local, with its connection to the service open and kept alive: get()
    hands out the in-memory one where the real get() would connect; the rest runs as it is."""

    def __init__(self, options, reader):
        super().__init__(options)
        self.kept = reader

    def get(self, repeatable):
        return self.kept, True


def check(make_run, requests=3):
    """Every request must come back as nginx's response, whole: a path that answers 404 or 502
    instead (a changed route, a changed internal) would be measured just as happily."""
    sent = []
    make_run(requests, sent)()
    if b"".join(sent) != RESPONSE * requests:
        raise SystemExit("%s does not proxy the request (first bytes sent: %r); fix bench/python_path.py"
                         % (make_run.__name__, b"".join(sent)[:80]))


def best_of(make_run, requests, repeats=15):
    """Microseconds per request, the best of `repeats` runs. This machine's speed drifts even
    for pure computation, so the mean would wander; the best run is the code's own cost, and
    repeats within about 1 us when the machine is not busy elsewhere."""
    best = float("inf")
    for _ in range(repeats):
        run = make_run(requests)
        started = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000, help="requests per run (default 10000)")
    parser.add_argument("--profile", action="store_true", help="also print where the time goes (cProfile)")
    args = parser.parse_args(argv)
    for name, make_run in (("server", server_path), ("client, --inspect=off", client_path),
                           ("client, inspector on", inspected_client_path)):
        check(make_run)
        print("%s: %.1f us of Python per request" % (name, best_of(make_run, args.requests)), flush=True)
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(make_run(args.requests))
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
