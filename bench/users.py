"""As users run it, in one run (issue 12; not yet part of `make bench`): npm lt at default
flags through our server and through the Node server, in front of nginx as distributions ship it (sendfile on, tcp_nopush on) and in front of an origin
that closes after each response.

Usage: make test-setup && .venv/bin/python bench/users.py   (needs wrk and nginx, which
`make bench` installs, and the Node server from scripts/install-reference-server). Prints one
line per path; wrk runs 5 s each, one thread.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "users")
LT = ROOT + "/tests/node/node_modules/.bin/lt"
REF = ROOT + "/tests/node/reference-server"
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
procs = []
def start(argv, name):
    f = open("%s/%s.log" % (OUT, name), "w")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True); procs.append(p); return p
def wait_port(port):
    for _ in range(200):
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit("port %d never opened" % port)
def wait_url(name):
    for _ in range(300):
        m = re.search(r"your url is: (\S+)", open("%s/%s.log" % (OUT, name)).read())
        if m: return m.group(1)
        time.sleep(0.05)
    raise SystemExit(name + " printed no url")
def sockets(port, tid):
    for _ in range(200):
        try:
            if json.load(urllib.request.urlopen("http://127.0.0.1:%d/api/tunnels/%s/status" % (port, tid)))["connected_sockets"] >= 10: return
        except Exception: pass
        time.sleep(0.05)
def wrk(port, host, conns, close=False, secs=5):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency", "-H", "Host: " + host] + (["-H", "Connection: close"] if close else []) + ["http://127.0.0.1:%d/1k" % port]
    t = subprocess.run(argv, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50 = re.search(r"^\s*50%\s+(\S+)", t, re.M).group(1)
    errs = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    total = int(re.search(r"(\d+) requests in", t).group(1))
    return "%8.0f req/s p50 %-8s errors %d non-2xx %s of %d" % (rps, p50, errs, non.group(1) if non else 0, total)
os.makedirs(OUT, exist_ok=True)
try:
    root = OUT + "/site"; os.makedirs(root, exist_ok=True); open(root + "/1k", "wb").write(b"x" * 1024)
    ng = free()
    open(OUT + "/nginx.conf", "w").write("""worker_processes 1; error_log %s/ng.err warn; pid %s/ng.pid;
events { worker_connections 4096; }
http { sendfile on; tcp_nopush on; access_log off; keepalive_timeout 65;
  server { listen 127.0.0.1:%d; root %s; } }""" % (OUT, OUT, ng, root))
    start(["nginx", "-c", OUT + "/nginx.conf", "-g", "daemon off;"], "nginx"); wait_port(ng)
    closer = free()
    start([sys.executable, "-c", """
import socket, threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", %d)); s.listen(512)
def serve(c):
    b=b""
    while b"\\r\\n\\r\\n" not in b:
        d=c.recv(65536)
        if not d: c.close(); return
        b+=d
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 1024\\r\\n\\r\\n" + b"x"*1024); c.close()
while True:
    c,_=s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
""" % closer], "closer"); wait_port(closer)
    ours, node = free(), free()
    start([sys.executable, "lt_server.py", "--port", str(ours), "--address", "127.0.0.1", "-d", "localhost", "--log-level", "warning"], "ours"); wait_port(ours)
    start(["node", "-r", REF + "/node_modules/esm", REF + "/bin/server", "--port", str(node), "--address", "127.0.0.1", "--domain", "localhost"], "node"); wait_port(node)
    rows = [("direct nginx (sendfile on)", ng, "127.0.0.1")]
    for label, sport in (("our server", ours), ("Node server", node)):
        for origin, oport in (("nginx", ng), ("closer", closer)):
            name = "lt-%d-%s" % (sport, origin)
            start([LT, "--host", "http://localhost:%d" % sport, "--port", str(oport)], name)
            url = wait_url(name); tid = url.split("//")[1].split(".")[0]; sockets(sport, tid)
            rows.append(("%s + npm lt (default flags) -> %s" % (label, origin), sport, "%s.localhost" % tid))
    for label, port, host in rows:
        if label.endswith("closer"):
            print("%-55s 6 conns keep-alive: %s" % (label, wrk(port, host, 6)), flush=True)
        else:
            print("%-55s keep-alive: %s" % (label, wrk(port, host, 50)), flush=True)
            print("%-55s close:      %s" % (label, wrk(port, host, 50, close=True)), flush=True)
finally:
    for p in procs:
        try: os.killpg(p.pid, 9)
        except OSError: pass
