"""The benchmark's system under test and its scenarios. Every figure comes from real processes on
127.0.0.1: nginx as the origin, wrk as the load, our server, our client and the npm `lt` client."""
import hashlib
import http.client
import json
import os
import socket
import statistics
import sys
import time

from tools import (MIB, NODE_LT, ORIGIN_JS, Proc, free_port, progress, rss_mb, run_wrk, run_wrk_cpu, start_nginx,
                   wait_listening)

PY = sys.executable
CLIENTS = ("python", "inspected", "node")
#: Measuring sticks run in the keep-alive rounds beside the real paths (see Rig's floors).
FLOORS = ("splice", "http")
LABEL = {"direct": "direct to nginx", "python": "our server + our client (--inspect=off)",
         "inspected": "our server + our client, inspector on", "node": "our server + npm lt",
         "splice": "splice floor", "http": "HTTP-aware floor"}
BENCH = os.path.dirname(os.path.abspath(__file__))


def client_argv(kind, server_port, local_port, name):
    """"python" is our client with its inspector off, "inspected" with it on (its default)."""
    if kind in ("python", "inspected"):
        return [PY, "lt_client.py", "-h", "http://localhost:%d" % server_port, "-p", str(local_port),
                "-l", "127.0.0.1", "-s", name] + (["--inspect=off"] if kind == "python" else [])
    return [NODE_LT, "--host", "http://localhost:%d" % server_port, "--port", str(local_port),
            "--local-host", "127.0.0.1", "--subdomain", name]


def start_client(procs, kind, server_port, local_port, name, extra=()):
    """A tunnel client (client_argv, then `extra`) kept in `procs` for stopping, once its URL is
    printed and its tunnel's sockets are connected: its Proc."""
    proc = Proc("client-" + name, client_argv(kind, server_port, local_port, name) + list(extra))
    procs.append(proc)
    proc.wait_for(r"your url is")
    wait_sockets(server_port, name)
    return proc


def start_server(name="server", extra=()):
    port = free_port()
    proc = Proc(name, [PY, "lt_server.py", "--port", str(port), "--address", "127.0.0.1",
                       "--domain", "localhost", "--log-level", "warning", *extra])
    proc.wait_for(r"listening on")
    return proc, port


def api_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": "localhost:%d" % port})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, body


def wait_sockets(port, name, count=10, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = api_get(port, "/api/tunnels/%s/status" % name)
        if status == 200 and json.loads(body)["connected_sockets"] >= count:
            return
        time.sleep(0.05)
    raise RuntimeError("tunnel %s never had %d sockets" % (name, count))


class Rig:
    """nginx, the Node WebSocket origin, our server, and for each client kind a tunnel to
    nginx and one to the WebSocket origin."""

    def __init__(self, site):
        self.procs = []
        self.nginx, self.nginx_port = self._keep(start_nginx(site))
        self.origin = self._keep_proc(Proc("origin", ["node", ORIGIN_JS]))
        self.origin_port = int(self.origin.wait_for(r"listening (\d+)").group(1))
        self.server, self.port = self._keep(start_server())
        self.clients = {}
        for kind in CLIENTS:
            for purpose, local in (("web", self.nginx_port), ("ws", self.origin_port)):
                name = "bench-%s-%s" % (kind, purpose)
                self.clients[kind, purpose] = start_client(self.procs, kind, self.port, local, name)
        self.floors = {}    # which -> (port, {role: pid})
        self._start_splice_floor()
        self._start_http_floor()

    def _keep(self, pair):
        self.procs.append(pair[0])
        return pair

    def _keep_proc(self, proc):
        self.procs.append(proc)
        return proc

    def target(self, which, purpose="web"):
        """(port, Host) that reaches nginx (or the WS origin) directly or through a tunnel."""
        if which in FLOORS:
            return self.floors[which][0], "127.0.0.1"
        if which == "direct":
            return (self.nginx_port if purpose == "web" else self.origin_port), "127.0.0.1"
        return self.port, "bench-%s-%s.localhost" % (which, purpose)

    def processes(self, which):
        """name -> pid of every process a request to `which` passes through, wrk aside."""
        if which == "direct":
            return {"nginx": self.nginx.pid}
        if which in FLOORS:
            return dict(self.floors[which][1], nginx=self.nginx.pid)
        return {"server": self.server.pid, "client": self.clients[which, "web"].pid, "nginx": self.nginx.pid}

    # The floors: two gevent processes in the same three-hop chain as our server and client,
    # run in the same keep-alive rounds, so each round says how far we are from them.

    def _start_splice_floor(self):
        """Processes that only splice bytes (no HTTP parsing, one upstream connection per
        visitor connection): what any design on gevent pays (bench/splice_relay.py)."""
        inner_port, outer_port = free_port(), free_port()
        relay = os.path.join(BENCH, "splice_relay.py")
        inner = self._keep_proc(Proc("splice-inner", [PY, relay, str(inner_port), str(self.nginx_port)]))
        outer = self._keep_proc(Proc("splice-outer", [PY, relay, str(outer_port), str(inner_port)]))
        wait_listening(inner_port)
        wait_listening(outer_port)
        self.floors["splice"] = (outer_port, {"server": outer.pid, "client": inner.pid})

    def _start_http_floor(self, sockets=10):
        """Processes that do only the per-request work our design cannot skip (find each
        message's end, borrow one of `sockets` shared tunnel sockets per request): the floor of
        this design, as opposed to any design (bench/http_relay_floor.py)."""
        front_port, tunnel_port = free_port(), free_port()
        relay = os.path.join(BENCH, "http_relay_floor.py")
        front = self._keep_proc(Proc("http-floor-front", [PY, relay, "front", str(front_port), str(tunnel_port)]))
        # The front port opens after the tunnel port. Not a probe of the tunnel port itself:
        # the floor would take the probe for a tunnel socket.
        wait_listening(front_port)
        back = self._keep_proc(Proc("http-floor-back", [PY, relay, "back", str(tunnel_port), str(self.nginx_port),
                                                        str(sockets)]))
        time.sleep(0.5)     # its tunnel sockets connect
        if back.popen.poll() is not None:
            raise RuntimeError("the HTTP-aware floor did not start; see %s" % back.log_path)
        self.floors["http"] = (front_port, {"server": front.pid, "client": back.pid})

    def stop(self):
        for proc in reversed(self.procs):
            proc.stop()


# --- throughput and latency ---------------------------------------------------------------------

def keepalive(rig, which, seconds):
    """The headline scenario, with the CPU each process on the path spent per request."""
    port, host = rig.target(which)
    return run_wrk_cpu("http://127.0.0.1:%d/1k" % port, host, seconds, 50, rig.processes(which))


def connection_close(rig, which, seconds):
    port, host = rig.target(which)
    return run_wrk("http://127.0.0.1:%d/1k" % port, host, seconds, 50, ["Connection: close"])


def download(rig, which, seconds, site):
    port, host = rig.target(which)
    result = run_wrk("http://127.0.0.1:%d/64m" % port, host, seconds, 1)
    result["exact"] = _download_digest(port, host) == _file_digest(os.path.join(site, "64m"))
    return result


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed inside a response head: %r" % head)
        head += data
    return head.split(b"\r\n\r\n", 1)


def _download_digest(port, host):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /64m HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
        head, body = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        digest, left = hashlib.sha256(body), 64 * MIB - len(body)
        while left:
            data = sock.recv(min(left, MIB))
            digest.update(data)
            left -= len(data)
        return digest.hexdigest()


def upload(rig, which, site, repeats=3):
    """PUT 64 MiB to nginx (WebDAV stores it); MB/s from first byte sent to the answer."""
    port, host = rig.target(which)
    payload = os.urandom(64 * MIB)
    expected = hashlib.sha256(payload).hexdigest()
    stored = os.path.join(site, "upload", "blob-" + which)
    rates, exact = [], True
    for _ in range(repeats):
        if os.path.exists(stored):
            os.remove(stored)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            started = time.perf_counter()
            sock.sendall(b"PUT /upload/blob-%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
                         % (which.encode(), host.encode(), len(payload)))
            sock.sendall(payload)
            head, _ = _read_head(sock)
            elapsed = time.perf_counter() - started
        exact = exact and head.split(b" ")[1] in (b"201", b"204") and _file_digest(stored) == expected
        rates.append(64 / elapsed)
    return {"mbps": statistics.median(rates), "exact": exact, "errors": 0 if exact else 1}


def websocket(rig, which, seconds):
    """Echo round trips of 64-byte messages over one WebSocket, one at a time."""
    port, host = rig.target(which, "ws")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                 % host.encode())
    head, rest = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = b"m" * 64
    frame = bytes([0x82, 0x80 | 64]) + b"\0\0\0\0" + payload   # a zero mask leaves it as is
    echo = bytes([0x82, 64]) + payload
    rtts, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        sock.sendall(frame)
        got = rest
        while len(got) < len(echo):
            got += sock.recv(4096)
        rest = got[len(echo):]
        if got[:len(echo)] != echo:
            raise RuntimeError("WebSocket echo came back wrong")
        rtts.append((time.perf_counter() - started) * 1000)
    sock.close()
    return {"msgs": len(rtts) / seconds, "p50": _percentile(rtts, 50), "p99": _percentile(rtts, 99), "errors": 0}


def _percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# --- time to the first proxied byte ---------------------------------------------------------------

def first_byte_server(rig, repeats=20):
    """?new, one tunnel socket, one visitor request answered by the harness: the server's part."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        info = json.loads(api_get(rig.port, "/?new")[1])
        tunnel = socket.create_connection(("127.0.0.1", info["port"]))
        visitor = socket.create_connection(("127.0.0.1", rig.port))
        visitor.sendall(b"GET / HTTP/1.1\r\nHost: %s.localhost\r\n\r\n" % info["id"].encode())
        _read_head(tunnel)
        tunnel.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        visitor.recv(1)
        times.append((time.perf_counter() - started) * 1000)
        visitor.close()
        tunnel.close()
    return {"p50": _percentile(times, 50), "p99": _percentile(times, 99)}


def first_byte_client(rig, kind, attempt):
    """From starting a client process to the first byte of a visitor's answer through it."""
    name = "bench-first-%s-%d" % (kind, attempt)
    started = time.perf_counter()
    proc = Proc("first-" + name, client_argv(kind, rig.port, rig.nginx_port, name))
    try:
        proc.wait_for(r"your url is", 20)
        announced = time.perf_counter()
        while True:
            with socket.create_connection(("127.0.0.1", rig.port)) as visitor:
                visitor.sendall(b"GET /1k HTTP/1.1\r\nHost: %s.localhost\r\n\r\n" % name.encode())
                if visitor.recv(12).endswith(b"200"):
                    done = time.perf_counter()
                    return {"total": (done - started) * 1000, "after_url": (done - announced) * 1000}
            time.sleep(0.002)
    finally:
        proc.stop()


# --- memory ---------------------------------------------------------------------------------------

def server_memory(tunnels=1000, per_tunnel=10):
    """A fresh server's RSS idle, then holding `tunnels` tunnels of `per_tunnel` idle sockets."""
    # One address asks for all the tunnels here, which the admission limits exist to stop.
    proc, port = start_server("server-memory", ["--new-per-minute", str(tunnels * 2),
                                                "--max-tunnels-per-address", str(tunnels * 2)])
    try:
        time.sleep(1)
        idle = rss_mb(proc.pid)
        held = []
        for i in range(tunnels):
            status, body = api_get(port, "/?new")
            if status != 200:
                raise RuntimeError("the server refused tunnel %d: %d %s" % (i + 1, status, body[:200]))
            info = json.loads(body)
            held += [socket.create_connection(("127.0.0.1", info["port"])) for _ in range(per_tunnel)]
            if i % 200 == 199:
                progress("memory: %d tunnels, %d sockets" % (i + 1, len(held)))
        time.sleep(2)
        status = json.loads(api_get(port, "/api/status")[1])
        loaded = rss_mb(proc.pid)
        for sock in held:
            sock.close()
        return {"idle": idle, "loaded": loaded, "tunnels": status["tunnels"], "sockets": len(held)}
    finally:
        proc.stop()


def client_memory(rig):
    return {kind: rss_mb(rig.clients[kind, "web"].pid) for kind in CLIENTS}
