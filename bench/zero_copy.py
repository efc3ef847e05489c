"""What zero-copy relaying would buy a download (issue 12): one gevent hop that copies bytes through
Python (recv + send, as relay.py does) against one that moves them with os.splice through a pipe
(the kernel moves pages; Python only waits for readiness), in front of nginx as distributions ship
it, beside nginx direct, in one run.

Usage: .venv/bin/python bench/zero_copy.py [--seconds 5]   (after `make bench` installed wrk and
nginx). Prints MB/s of a 64 MiB download over one keep-alive connection for each path.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import fcntl  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from gevent.socket import wait_read, wait_write  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools import OUT, Proc, free_port, prepare_site, run_wrk, stop_all, wait_listening  # noqa: E402
from users import NGINX_AS_SHIPPED  # noqa: E402

CHUNK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0


def copy_through_python(src, dst):
    """What relay.py does: recv into a new bytes object, send it on."""
    while True:
        data = src.recv(65536)
        if not data:
            return
        dst.sendall(data)


def splice_through_pipe(src, dst):
    """src -> pipe -> dst with splice(2); a pipe is the only way Linux splices socket to socket."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, CHUNK)    # 16 pages by default: 64 KiB a splice
        while True:
            try:
                moved = os.splice(src.fileno(), write_end, CHUNK, flags=FLAGS)
            except BlockingIOError:
                wait_read(src.fileno())
                continue
            if not moved:
                return
            while moved:
                try:
                    moved -= os.splice(read_end, dst.fileno(), moved, flags=FLAGS)
                except BlockingIOError:
                    wait_write(dst.fileno())
    finally:
        os.close(read_end)
        os.close(write_end)


def relay(upstream_port, copy):
    """A one-hop relay: each visitor connection gets its own upstream connection; requests go up
    through Python, responses come down through `copy`."""
    def handle(visitor, _addr):
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        up = gevent.spawn(copy_through_python, visitor, upstream)
        try:
            copy(upstream, visitor)
        except OSError:
            pass
        finally:
            up.kill()
            upstream.close()
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


def serve(upstream_port):
    """The relays, in a process of their own so they do not share a core's time with wrk."""
    servers = [relay(upstream_port, copy_through_python), relay(upstream_port, splice_through_pipe)]
    print("ports %d %d" % tuple(server.server_port for server in servers), flush=True)
    gevent.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)   # the relay process
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    os.makedirs(OUT, exist_ok=True)
    site = prepare_site()
    port = free_port()
    conf = os.path.join(OUT, "zero-copy-nginx.conf")
    with open(conf, "w") as out:
        out.write(NGINX_AS_SHIPPED.format(out=OUT, port=port, root=site))
    procs = [Proc("zero-copy-nginx", ["nginx", "-c", conf, "-p", OUT, "-g", "daemon off;"])]
    try:
        wait_listening(port)
        procs.append(Proc("zero-copy-relays", [sys.executable, os.path.abspath(__file__), "--serve", str(port)]))
        copying, splicing = (int(p) for p in procs[-1].wait_for(r"ports (\d+) (\d+)").groups())
        # Alternating rounds: this machine drifts within a minute.
        for number in range(1, 4):
            for label, target in (("direct", port), ("recv + send", copying), ("splice", splicing)):
                r = run_wrk("http://127.0.0.1:%d/64m" % target, "127.0.0.1", args.seconds, 1)
                print("round %d  %-12s %8.0f MB/s  errors %d" % (number, label, r["mbps"], r["errors"]), flush=True)
    finally:
        stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
