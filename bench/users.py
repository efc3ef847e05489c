"""As users run it, in one run (issue 12; not yet part of `make bench`): the npm `lt` client at
its default flags through our server and through the Node.js server, in front of nginx as
distributions ship it (`sendfile on; tcp_nopush on`) and in front of an origin that closes after
each response.

Usage: make test-setup && .venv/bin/python bench/users.py   (wrk and nginx come with `make
bench`, the Node server with scripts/install-reference-server). One line per path; each wrk run
lasts 5 s with one thread.
"""
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools import NODE_LT, OUT, ROOT, Proc, free_port, run_wrk, wait_listening  # noqa: E402

REFERENCE = os.path.join(ROOT, "tests", "node", "reference-server")
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


def start_nginx(procs):
    root = os.path.join(OUT, "users-site")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "1k"), "wb") as out:
        out.write(b"x" * 1024)
    port = free_port()
    conf = os.path.join(OUT, "users-nginx.conf")
    with open(conf, "w") as out:
        out.write(NGINX_AS_SHIPPED.format(out=OUT, port=port, root=root))
    procs.append(Proc("users-nginx", ["nginx", "-c", conf, "-g", "daemon off;"]))
    wait_listening(port)
    return port


def start(procs, name, argv, port):
    procs.append(Proc(name, argv))
    wait_listening(port)
    return port


def npm_tunnel(procs, server_port, local_port, name):
    """The npm client at its default flags; the tunnel's Host once its 10 sockets are up."""
    proc = Proc(name, [NODE_LT, "--host", "http://localhost:%d" % server_port, "--port", str(local_port)])
    procs.append(proc)
    tunnel_id = proc.wait_for(r"your url is: https?://([^.]+)\.").group(1)
    status = "http://127.0.0.1:%d/api/tunnels/%s/status" % (server_port, tunnel_id)
    deadline = time.monotonic() + 20
    while json.load(urllib.request.urlopen(status))["connected_sockets"] < 10:
        if time.monotonic() > deadline:
            raise RuntimeError("%s never had 10 sockets" % tunnel_id)
        time.sleep(0.05)
    return tunnel_id + ".localhost"


def line(label, port, host, connections, headers=()):
    r = run_wrk("http://127.0.0.1:%d/1k" % port, host, 5, connections, headers)
    print("%-58s %8.0f req/s  p50 %6.2f ms  errors %d of %d" % (label, r["rps"], r["p50"], r["errors"], r["requests"]),
          flush=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    procs = []
    try:
        nginx = start_nginx(procs)
        closer = free_port()
        start(procs, "users-closing-origin", [PY, os.path.join(ROOT, "bench", "closing_origin.py"), str(closer)], closer)
        ours, node = free_port(), free_port()
        start(procs, "users-our-server", [PY, "lt_server.py", "--port", str(ours), "--address", "127.0.0.1",
                                          "--domain", "localhost", "--log-level", "warning"], ours)
        start(procs, "users-node-server", ["node", "-r", os.path.join(REFERENCE, "node_modules", "esm"),
                                           os.path.join(REFERENCE, "bin", "server"), "--port", str(node),
                                           "--address", "127.0.0.1", "--domain", "localhost"], node)
        line("direct to nginx, keep-alive", nginx, "127.0.0.1", 50)
        line("direct to nginx, Connection: close", nginx, "127.0.0.1", 50, ["Connection: close"])
        for label, server in (("our server", ours), ("Node server", node)):
            host = npm_tunnel(procs, server, nginx, "users-lt-%d-nginx" % server)
            line("%s + npm lt -> nginx, keep-alive" % label, server, host, 50)
            line("%s + npm lt -> nginx, Connection: close" % label, server, host, 50, ["Connection: close"])
            host = npm_tunnel(procs, server, closer, "users-lt-%d-closer" % server)
            line("%s + npm lt -> closing origin, 6 keep-alive" % label, server, host, 6)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
