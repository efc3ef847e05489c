"""As users run it (issue 12), a part of `make bench`: stock clients at their default flags, in
front of nginx as distributions ship it (`sendfile on; tcp_nopush on`) and of an origin that
closes after each response, through our server and, beside it in the same run, the Node.js
localtunnel server (../shared/anchors, installed by scripts/install-reference-server).

Without the Node server the harness says why and leaves its column empty. Alone:
`.venv/bin/python bench/users.py [--seconds 5]` prints one line per figure (after `make bench`
has installed wrk and nginx once); `--websocket` adds WebSocket echo through each path to the Node
origin (tests/node/origin.js), the splice's own scenario, which the harness's report leaves out.
"""
import argparse
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
from scenarios import _download_digest, _file_digest  # noqa: E402
from tools import (  # noqa: E402
    NODE_LT, ORIGIN_JS, OUT, ROOT, Proc, free_port, prepare_site, progress, run_wrk, stop_all, wait_listening,
)

REFERENCE = os.path.join(ROOT, "tests", "node", "reference-server")
N8N_LT = os.path.join(ROOT, "tests", "node", "n8n-lt.js")
PY = sys.executable

NGINX_AS_SHIPPED = """worker_processes 1;
error_log {out}/users-nginx-error.log warn;
pid {out}/users-nginx.pid;
events {{ worker_connections 4096; }}
http {{
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  access_log off;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""

#: A POST of 1 KiB, for the origin that closes after each response.
POST_SCRIPT = 'wrk.method = "POST"\nwrk.body = string.rep("p", 1024)\n' \
              'wrk.headers["Content-Type"] = "application/octet-stream"\n'

#: Paths through a tunnel: (server, client), each at its default flags.
PATHS = {
    "ours+python": ("our server", "our client"),
    "ours+npm": ("our server", "npm lt"),
    "ours+n8n": ("our server", "@n8n/localtunnel"),
    "node+npm": ("Node server", "npm lt"),
}
LABEL = dict({"direct": "direct"}, **{key: "%s + %s" % pair for key, pair in PATHS.items()})
#: scenario: (title, connections, request headers, POST?)
SCENARIOS = {
    "keepalive": ("1 KiB GET, 50 keep-alive connections", 50, (), False),
    "close": ("1 KiB GET, `Connection: close`, 50 connections", 50, ("Connection: close",), False),
    "one": ("1 KiB GET, one keep-alive visitor", 1, (), False),
    "download": ("64 MiB download, one connection (byte-exact checked)", 1, (), False),
    "closing-get": ("closing origin: GET, 20 keep-alive connections", 20, (), False),
    "closing-post": ("closing origin: 1 KiB POST, 20 keep-alive connections", 20, (), True),
    "closing-6": ("closing origin: GET, 6 keep-alive connections", 6, (), False),
}
#: Which paths run which scenario. The closing origin at 20 connections is for our client: the
#: npm client cannot survive it whatever the server does (README, "Stock clients").
PLAN = {
    "keepalive": ("direct", "ours+python", "ours+npm", "node+npm"),
    "close": ("direct", "ours+python", "ours+npm", "node+npm"),
    "one": ("direct", "ours+python", "ours+npm", "ours+n8n", "node+npm"),
    "download": ("direct", "ours+python", "ours+npm", "node+npm"),
    "closing-get": ("ours+python",),
    "closing-post": ("ours+python",),
    "closing-6": ("ours+npm", "node+npm"),
}


def node_server_missing():
    """Why the Node server cannot run here, or None."""
    if not os.path.exists(os.path.join(REFERENCE, "bin", "server")):
        return ("the Node.js reference server is not installed (it comes from ../shared/anchors "
                "through scripts/install-reference-server; ../shared is absent or was not installed)")
    return None


class UsersRig:
    """Distro nginx, the closing origin, our server, the Node server when present, and one tunnel
    per (path, origin) at default flags."""

    def __init__(self, site):
        self.procs, self.site = [], site
        self.nginx = self._start_nginx()
        self.closer = self._listen("users-closing-origin", lambda port: [
            PY, os.path.join(ROOT, "bench", "closing_origin.py"), str(port)])
        self.servers = {"our server": self._listen("users-our-server", lambda port: [
            PY, "lt_server.py", "--port", str(port), "--address", "127.0.0.1", "--domain", "localhost",
            "--log-level", "warning"])}
        self.node_missing = node_server_missing()
        if self.node_missing is None:
            self.servers["Node server"] = self._listen("users-node-server", lambda port: [
                "node", "-r", os.path.join(REFERENCE, "node_modules", "esm"), os.path.join(REFERENCE, "bin", "server"),
                "--port", str(port), "--address", "127.0.0.1", "--domain", "localhost"])
        self.tunnels = {}   # (path, origin) -> (port, Host)
        self.ws_origin = None   # the Node WebSocket echo origin's port, started on first use

    def paths(self):
        return [path for path in LABEL if path == "direct" or PATHS[path][0] in self.servers]

    def target(self, path, origin="nginx"):
        """(port, Host) of `path` to `origin` ("nginx", "closer" or "ws"); tunnels open on first use."""
        local = self._origin_port(origin)
        if path == "direct":
            return local, "127.0.0.1"
        if (path, origin) not in self.tunnels:
            self.tunnels[path, origin] = self._tunnel(path, local)
        return self.tunnels[path, origin]

    def _origin_port(self, origin):
        if origin == "ws":
            if self.ws_origin is None:
                proc = Proc("users-ws-origin", ["node", ORIGIN_JS])
                self.procs.append(proc)
                self.ws_origin = int(proc.wait_for(r"listening (\d+)").group(1))
            return self.ws_origin
        return self.nginx if origin == "nginx" else self.closer

    def _start_nginx(self):
        port = free_port()
        conf = os.path.join(OUT, "users-nginx.conf")
        with open(conf, "w") as out:
            out.write(NGINX_AS_SHIPPED.format(out=OUT, port=port, root=self.site))
        self.procs.append(Proc("users-nginx", ["nginx", "-c", conf, "-p", OUT, "-g", "daemon off;"]))
        wait_listening(port)
        return port

    def _listen(self, name, argv_for):
        port = free_port()
        self.procs.append(Proc(name, argv_for(port)))
        wait_listening(port)
        return port

    def _tunnel(self, path, local):
        """A client at its default flags; the tunnel's (port, Host) once its 10 sockets are up."""
        server_name, client = PATHS[path]
        server = self.servers[server_name]
        host = "http://localhost:%d" % server
        argv = {"our client": [PY, "lt_client.py", "-h", host, "-p", str(local)],
                "npm lt": [NODE_LT, "--host", host, "--port", str(local)],
                "@n8n/localtunnel": ["node", N8N_LT, "--host", host, "--port", str(local)]}[client]
        proc = Proc("users-%s-%d" % (path, local), argv)
        self.procs.append(proc)
        tunnel_id = proc.wait_for(r"your url is: https?://([^.]+)\.").group(1)
        _wait_sockets(server, tunnel_id)
        return server, tunnel_id + ".localhost"

    def stop(self):
        stop_all(self.procs)


def _wait_sockets(server, tunnel_id, count=10, timeout=20):
    status = "http://127.0.0.1:%d/api/tunnels/%s/status" % (server, tunnel_id)
    deadline = time.monotonic() + timeout
    while json.load(urllib.request.urlopen(status, timeout=5))["connected_sockets"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError("tunnel %s never had %d sockets" % (tunnel_id, count))
        time.sleep(0.05)


def run_scenario(rig, scenario, path, seconds):
    _, connections, headers, post = SCENARIOS[scenario]
    origin = "closer" if scenario.startswith("closing") else "nginx"
    port, host = rig.target(path, origin)
    script = None
    if post:
        script = os.path.join(OUT, "users-post.lua")
        with open(script, "w") as out:
            out.write(POST_SCRIPT)
    name = "64m" if scenario == "download" else "1k"
    result = run_wrk("http://127.0.0.1:%d/%s" % (port, name), host, seconds, connections, headers, script)
    if scenario == "download":
        result["exact"] = _download_digest(port, host) == _file_digest(os.path.join(rig.site, "64m"))
    return result


def measure(site, seconds, report=progress):
    """{(scenario, path): wrk's figures}, and the reason the Node server is missing (or None)."""
    rig = UsersRig(site)
    results = {}
    try:
        steps = [(scenario, path) for scenario, paths in PLAN.items() for path in paths if path in rig.paths()]
        for number, (scenario, path) in enumerate(steps, 1):
            report("[users %d/%d] %s via %s" % (number, len(steps), SCENARIOS[scenario][0], LABEL[path]))
            results[scenario, path] = run_scenario(rig, scenario, path, seconds)
    finally:
        rig.stop()
    return results, rig.node_missing


def websocket_rounds(site, seconds, rounds):
    """WebSocket echo (64-byte messages, one at a time: scenarios.websocket) through every path,
    the paths back to back in each round, in rotating order; prints one line per run."""
    rig = UsersRig(site)
    try:
        paths = ["direct", "ours+python", "ours+npm", "node+npm"]
        paths = [path for path in paths if path in rig.paths()]
        for number in range(rounds):
            for path in paths[number % len(paths):] + paths[:number % len(paths)]:
                run = scenarios.websocket(rig, path, seconds)
                print("round %d, WebSocket echo via %-26s %8.0f msg/s  p50 %5.2f ms  p99 %5.2f ms"
                      % (number + 1, LABEL[path], run["msgs"], run["p50"], run["p99"]), flush=True)
    finally:
        rig.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--websocket", type=int, default=0, metavar="ROUNDS",
                        help="only WebSocket echo through every path, in this many rounds")
    args = parser.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    if args.websocket:
        websocket_rounds(prepare_site(), args.seconds, args.websocket)
        return 0
    results, node_missing = measure(prepare_site(), args.seconds)
    if node_missing:
        print("no Node server column: " + node_missing)
    for (scenario, path), r in results.items():
        print("%-55s %-36s %9.1f %s  p50 %6.2f ms  errors %d of %d" % (
            SCENARIOS[scenario][0], LABEL[path], r["mbps"] if scenario == "download" else r["rps"],
            "MB/s " if scenario == "download" else "req/s", r["p50"], r["errors"], r["requests"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
