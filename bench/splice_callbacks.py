"""What a splice costs per message: a greenlet per direction (relay._copy_one_way, which TLS
sockets still take) against the event loop's callbacks (relay.splice between plain sockets).

One gevent process splices each of 20 ping-pong connections to an echo server in another
process; 20 threads in this process send 200 bytes and wait for their echo, for a few seconds.
The splicing process's own CPU per exchange (request and answer) is the figure: it is what a
cluster node pays for a visitor it has handed over by splicing, and what the server and the
client pay per WebSocket message.

Usage: .venv/bin/python bench/splice_callbacks.py [--seconds 8] [--rounds 2]
"""
import argparse
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The splicing process, run as `python -c` with the mode, the echo port and the seconds.
_SPLICER = """
from gevent import monkey
monkey.patch_all()
import resource, socket, sys
sys.path.insert(0, sys.argv[4])
import gevent
from gevent.server import StreamServer
from localtunnel.transfer import relay

mode, echo_port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def handle(visitor, _addr):
    upstream = socket.create_connection(("127.0.0.1", echo_port))
    for sock in (visitor, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a, b = relay.Reader(visitor), relay.Reader(upstream)
    if mode == "callbacks":
        relay.splice(a, b)
    else:
        activity = relay._Activity()
        gevent.joinall([gevent.spawn(relay._copy_one_way, a, upstream, activity),
                        gevent.spawn(relay._copy_one_way, b, visitor, activity)])
    upstream.close()

server = StreamServer(("127.0.0.1", 0), handle)
server.start()
print(server.server_port, flush=True)
gevent.sleep(seconds + 3)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime, usage.ru_stime, flush=True)
"""


def echo_server():
    """An echo server in a child process (plain selectors: its CPU is not ours); (port, pid)."""
    listener = socket.create_server(("127.0.0.1", 0))
    pid = os.fork()
    if pid:
        port = listener.getsockname()[1]
        listener.close()
        return port, pid
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ)
                continue
            data = key.fileobj.recv(65536)
            if not data:
                selector.unregister(key.fileobj)
                key.fileobj.close()
                continue
            key.fileobj.setblocking(True)
            key.fileobj.sendall(data)
            key.fileobj.setblocking(False)


def one_run(mode, seconds):
    echo_port, echo_pid = echo_server()
    splicer = subprocess.Popen([sys.executable, "-c", _SPLICER, mode, str(echo_port), str(seconds),
                                os.path.join(ROOT, "lib")], stdout=subprocess.PIPE, text=True)
    try:
        port = int(splicer.stdout.readline())
        exchanges = []
        stop_at = time.monotonic() + seconds

        def visitor():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                message, count = b"x" * 200, 0
                while time.monotonic() < stop_at:
                    sock.sendall(message)
                    got = 0
                    while got < len(message):
                        got += len(sock.recv(65536))
                    count += 1
                exchanges.append(count)

        threads = [threading.Thread(target=visitor) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        user, system = map(float, splicer.stdout.readline().split())
        total = sum(exchanges)
        print("%-9s %8d exchanges; the splicer's CPU per exchange: user %.2f us, system %.2f us"
              % (mode, total, user * 1e6 / total, system * 1e6 / total), flush=True)
    finally:
        splicer.kill()
        os.kill(echo_pid, 9)
        os.waitpid(echo_pid, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    for number in range(args.rounds):
        for mode in (("greenlets", "callbacks") if number % 2 == 0 else ("callbacks", "greenlets")):
            one_run(mode, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
