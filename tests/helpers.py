"""Test helpers: subprocesses with bounded waits, a raw HTTP visitor, a WebSocket client, and a
scriptable fake tunnel client. All on real loopback sockets."""
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import gevent
import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

# Shared with the benchmarks, which do not import tests: visits, socket waits, a WebSocket client.
from loopback import visit, wait_listening, wait_sockets, ws_connect, ws_recv, ws_send  # noqa: E402,F401

LT = os.path.join(ROOT, "tests", "node", "node_modules", ".bin", "lt")
#: The Node.js localtunnel server, installed from ../shared/anchors (conftest's reference_server).
REFERENCE_SERVER = os.path.join(ROOT, "tests", "node", "reference-server")
#: The @n8n/localtunnel library opening one tunnel at its defaults (it has no command of its own).
N8N_LT = os.path.join(ROOT, "tests", "node", "n8n-lt.js")


class Proc:
    """A subprocess whose combined output is collected by a greenlet and searched with deadlines."""

    def __init__(self, argv, env=None, cwd=ROOT):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.argv = argv
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=full_env, cwd=cwd, start_new_session=True)
        self.output = ""
        self._reader = gevent.spawn(self._read)

    def _read(self):
        for line in self.popen.stdout:
            self.output += line.decode("utf-8", "replace")

    def wait_for(self, pattern, timeout):
        """The first match of `pattern` in the output; fails after `timeout` seconds."""
        regex = re.compile(pattern)
        with gevent.Timeout(timeout, AssertionError("no %r within %ss in output of %s:\n%s"
                                                    % (pattern, timeout, self.argv, self.output))):
            while True:
                match = regex.search(self.output)
                if match:
                    return match
                if self._reader.ready() and not regex.search(self.output):
                    raise AssertionError("%s exited (%s) without %r:\n%s"
                                         % (self.argv, self.popen.poll(), pattern, self.output))
                gevent.sleep(0.02)

    def wait(self, timeout):
        """The exit status; fails after `timeout` seconds."""
        with gevent.Timeout(timeout, AssertionError("%s still running after %ss:\n%s"
                                                    % (self.argv, timeout, self.output))):
            status = self.popen.wait()
            self._reader.join()
            return status

    def signal(self, signum):
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signum)

    def stop(self):
        if self.popen.poll() is None:
            self.signal(signal.SIGKILL)
            self.popen.wait()
        self._reader.kill()


def our_client_argv(server_port, local_port, subdomain=None, extra=()):
    argv = [sys.executable, os.path.join(ROOT, "lt_client.py"), "-h", "http://localhost:%d" % server_port,
            "-p", str(local_port)]
    return argv + (["-s", subdomain] if subdomain else []) + list(extra)


def node_client_argv(server_port, local_port, subdomain=None, extra=()):
    argv = [LT, "--host", "http://localhost:%d" % server_port, "--port", str(local_port)]
    return argv + (["--subdomain", subdomain] if subdomain else []) + list(extra)


def n8n_client_argv(server_port, local_port, subdomain=None, extra=()):
    argv = ["node", N8N_LT, "--host", "http://localhost:%d" % server_port, "--port", str(local_port)]
    return argv + (["--subdomain", subdomain] if subdomain else []) + list(extra)


CLIENT_ARGV = {"node": node_client_argv, "n8n": n8n_client_argv, "python": our_client_argv}


def start_client(kind, start, server_port, local_port, subdomain=None, extra=()):
    """A tunnel client subprocess, "node" (npm lt), "n8n" (@n8n/localtunnel) or "python" (ours);
    returns (proc, url)."""
    make_argv = CLIENT_ARGV[kind]
    proc = start(make_argv(server_port, local_port, subdomain, extra))
    url = proc.wait_for(r"your url is: (\S+)", 15).group(1)
    return proc, url


def start_node_lt(start, server_port, local_port, subdomain=None, extra=()):
    """The real npm `lt` client against our server; returns (proc, url)."""
    return start_client("node", start, server_port, local_port, subdomain, extra)


def tunnel_name(url):
    return url.split("//", 1)[1].split(".", 1)[0]


def sockets_of(server, name):
    """Tunnel `name`'s connected sockets on an in-process server; None once it is gone."""
    tunnel = server.registry.get(name)
    return tunnel.connected_sockets if tunnel else None


def wait_until(predicate, timeout, what):
    with gevent.Timeout(timeout, AssertionError("timed out waiting for " + what)):
        while not predicate():
            gevent.sleep(0.02)


def session_from(source_ip):
    """A keep-alive requests session whose connections come from `source_ip` (any 127/8)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter()
    adapter.init_poolmanager(1, 1, source_address=(source_ip, 0))
    session.mount("http://", adapter)
    return session


def api_get(port, path):
    """An API answer from the root host of the server at 127.0.0.1:`port`, as JSON."""
    return requests.get("http://127.0.0.1:%d%s" % (port, path), headers={"Host": "localhost:%d" % port},
                        timeout=5).json()


def get_from(source_ip, url, headers=None, timeout=5):
    """GET `url` over a connection from `source_ip` (any 127/8 address is loopback)."""
    with session_from(source_ip) as session:
        return session.get(url, headers=dict({"Host": "localhost"}, **(headers or {})), timeout=timeout)


def raw_exchange(port, data, timeout=5):
    """Send raw bytes to the front port and return everything read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock)


def read_all(sock):
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def status_of(raw):
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else None


# --- WebSocket --------------------------------------------------------------------------------

# --- A scriptable tunnel client ---------------------------------------------------------------

def pattern_digest(size):
    """The sha256 of `size` bytes of the origin's repeating pattern (GET /bytes?n=SIZE of
    tests/node/origin.js), without holding them: `size` is a multiple of 64 KiB."""
    pattern, expected = bytes(i % 251 for i in range(65536)), hashlib.sha256()
    for _ in range(size // 65536):
        expected.update(pattern)
    return expected.digest()


def streamed_digest(answer):
    """(bytes received, their sha256) of a streamed `requests` answer, read 1 MiB at a time."""
    digest, got = hashlib.sha256(), 0
    for piece in answer.iter_content(1 << 20):
        digest.update(piece)
        got += len(piece)
    return got, digest.digest()


def new_tunnel(port, name=None):
    path = "/%s" % name if name else "/?new"
    return requests.get("http://127.0.0.1:%d%s" % (port, path), headers={"Host": "localhost:%d" % port}).json()


def open_tunnel_sockets(info, count=None):
    return [socket.create_connection(("127.0.0.1", info["port"]), timeout=10)
            for _ in range(count or info["max_conn_count"])]


def read_request_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        if not data:
            return head
        head += data
    return head


def ok_handler(sock, head):
    """Answer one request with 200 and the request line as the body."""
    body = head.split(b"\r\n", 1)[0]
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def echo_head_handler(sock, head):
    """Answer with the request head as the body, so tests can see what reached the tunnel."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head))


class FakeClient:
    """A tunnel client we script: `count` sockets, each answering requests with `handler`."""

    def __init__(self, info, count=None, handler=ok_handler):
        self.socks = open_tunnel_sockets(info, count)
        self.heads = []
        self.handler = handler
        self.workers = [gevent.spawn(self._serve, sock) for sock in self.socks]

    def _serve(self, sock):
        try:
            while True:
                head = read_request_head(sock)
                if not head:
                    return
                self.heads.append(head)
                if self.handler(sock, head) is False:
                    sock.close()    # handler says: this client dies now
                    return
        except OSError:
            return

    def close(self):
        for worker in self.workers:
            worker.kill()
        for sock in self.socks:
            sock.close()


def free_port():
    """A loopback port free right now, for a process that must be told its port up front."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server_process(start, *flags):
    """`python lt_server.py` on an OS-chosen port as a real process; returns its public port.

    Attacks are measured against a server in its own process: in the test's process an attacker
    and the server would share one event loop, and the attacker's own waits would hide a stall."""
    proc = start([sys.executable, "lt_server.py", "--port", "0", "--address", "127.0.0.1", "-d", "localhost",
                  *flags])
    return int(proc.wait_for(r"listening on 127\.0\.0\.1:(\d+)", 15).group(1))


def tunnel_process_pair(start, kind, local_port):
    """A server process and a `kind` client (see start_client) in front of `local_port`, its
    ten sockets connected; returns (the server's public port, the tunnel's name)."""
    port = start_server_process(start)
    _, url = start_client(kind, start, port, local_port)
    name = tunnel_name(url)
    wait_sockets(port, name, 10)
    return port, name


def timed_visits(port, name, seconds, path="/"):
    """Sequential keep-alive GETs to tunnel `name` for `seconds`; returns each one's latency."""
    latencies = []
    session = requests.Session()
    stop_at = time.monotonic() + seconds
    with session:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            answer = visit(port, name, path, session=session, timeout=10)
            latencies.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
    return latencies


class ReconnectingClient:
    """`count` tunnel sockets answered by `handler`, each reopened as soon as it closes (as real
    clients do when the server retires a socket); `heads` collects every request head read."""

    def __init__(self, info, handler=ok_handler, count=10):
        self.info, self.handler, self.heads = info, handler, []
        self.slots = [gevent.spawn(self._slot) for _ in range(count)]

    def _slot(self):
        while True:
            client = FakeClient(self.info, 1, handler=self.handler)
            client.heads = self.heads
            try:
                gevent.joinall(client.workers)
            finally:
                client.close()

    def close(self):
        gevent.killall(self.slots)


class _Discard:
    @staticmethod
    def sendall(data):
        pass


def scripted_origin(answer, nodelay=False, close_after=False):
    """An origin in this process that reads each request whole, head and body, and sends what
    `answer(parsed request)` returns: bytes in one write, or a tuple of bytes in as many writes.
    With `nodelay` Nagle is off; with `close_after` it closes after each answer without saying
    so. For origins that misbehave on cue. Returns the started StreamServer (`server_port`)."""
    from gevent.server import StreamServer

    from localtunnel.transfer import relay
    from localtunnel.wire import framing, http11

    def handle(sock, _addr):
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = relay.Reader(sock)
        try:
            while True:
                head = reader.read_head(65536)
                if not head:
                    return
                request = http11.parse_request_head(head)
                if not relay.copy_body(reader, framing.request_framer(request), _Discard)[0]:
                    return
                writes = answer(request)
                for data in (writes if isinstance(writes, tuple) else (writes,)):
                    sock.sendall(data)
                if close_after:
                    return      # the server closes the socket when its handler returns
        except (OSError, http11.HttpError, relay.Closed):
            return

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


# --- Redis, for the cluster ---------------------------------------------------------------------

#: Tests of the cluster run Debian's redis-server and redis-py; both come with `make test-setup`.
needs_redis = pytest.mark.skipif(not shutil.which("redis-server") or importlib.util.find_spec("redis") is None,
                                 reason="redis-server or redis-py is not installed (make test-setup installs both)")


class RedisServer:
    """Debian's redis-server on a free loopback port, persistence off; stop() and start() again
    on the same port for outage tests."""

    def __init__(self, procs):
        self.procs, self.port, self.proc = procs, free_port(), None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        self.proc = self.procs(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"])
        wait_listening(self.port)

    def stop(self):
        self.proc.stop()

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)


class FailoverBalancer:
    """A few lines of TCP balancing, as an L4 balancer in front of a cluster does: each
    connection goes to the first of `ports` that accepts it, bytes copied both ways."""

    def __init__(self, ports):
        from gevent.server import StreamServer

        self.ports = ports
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, visitor, _addr):
        for port in self.ports:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                continue
        else:
            return
        copies = [gevent.spawn(_copy_until_closed, visitor, upstream), gevent.spawn(_copy_until_closed, upstream, visitor)]
        gevent.joinall(copies)
        upstream.close()

    def stop(self):
        self.server.stop()


def _copy_until_closed(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
