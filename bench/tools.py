"""Plumbing for the benchmark harness: installing and starting the real tools (nginx, wrk, the
Node origin and clients, our server and client), reading wrk's report, measuring memory."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from loopback import wait_listening  # noqa: F401  (the harness's scripts take it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
NODE_LT = os.path.join(ROOT, "tests", "node", "node_modules", ".bin", "lt")
ORIGIN_JS = os.path.join(ROOT, "tests", "node", "origin.js")
MIB = 1024 * 1024


def progress(message):
    print("bench: " + message, file=sys.stderr, flush=True)


def ensure_tools():
    """wrk and nginx come from Debian; install them when missing (the machines run as root)."""
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx-light")) if not shutil.which(tool)]
    if missing:
        progress("installing %s from Debian" % " ".join(missing))
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not os.path.exists(NODE_LT):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=os.path.join(ROOT, "tests", "node"), check=True)


def prepare_run(doc, argv, seconds, rounds):
    """The usual command line of a side benchmark (--seconds, --rounds) parsed, its tools
    installed when missing, bench/out made and the open-file limit raised: the parsed args."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=seconds)
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args(argv)
    ensure_tools()
    os.makedirs(OUT, exist_ok=True)
    raise_fd_limit()
    return args


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit():
    """10,000 idle tunnel sockets need as many descriptors on each end."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


class Proc:
    """A child process whose output goes to a log file under bench/out."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.log_path = os.path.join(OUT, name + ".log")
        self.log = open(self.log_path, "w")
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env=dict(os.environ, **(env or {})), preexec_fn=raise_fd_limit)

    @property
    def pid(self):
        return self.popen.pid

    def wait_for(self, pattern, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as log:
                match = re.search(pattern, log.read())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("%s did not print %r; see %s" % (self.name, pattern, self.log_path))

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


def stop_all(procs):
    """Stop what a run started, the last started first."""
    for proc in reversed(procs):
        proc.stop()


def cpu_seconds(pid, own_only=False):
    """(user, system) CPU seconds used so far by a process and its children that are still
    running (nginx's master and its worker), from /proc."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for each in [pid] + ([] if own_only else children(pid)):
        try:
            with open("/proc/%d/stat" % each) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue    # it ended between listing and reading
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as listing:
            found = [int(child) for child in listing.read().split()]
    except OSError:
        return []
    return found + [grandchild for child in found for grandchild in children(child)]


def run_wrk_cpu(url, host, seconds, connections, pids, extra_headers=(), own_only=False):
    """run_wrk, plus `cpu`: for each name in `pids` (name -> pid), the (user, system)
    microseconds that process spent per request during the run (with its children, unless
    `own_only`)."""
    before = {name: cpu_seconds(pid, own_only) for name, pid in pids.items()}
    result = run_wrk(url, host, seconds, connections, extra_headers)
    count = max(result["requests"], 1)
    result["cpu"] = {}
    for name, pid in pids.items():
        after = cpu_seconds(pid, own_only)
        result["cpu"][name] = tuple((a - b) * 1e6 / count for a, b in zip(after, before[name]))
    return result


def start_redis(name):
    """A redis-server of the run's own on a free loopback port, persistence off: (Proc, URL)."""
    port = free_port()
    proc = Proc(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait_listening(port)
    return proc, "redis://127.0.0.1:%d/0" % port


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# --- nginx, the origin and the physical limit --------------------------------------------------

NGINX_CONF = """worker_processes 1;
error_log {out}/nginx-error.log warn;
pid {out}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {out}/nginx-body;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /upload/ {{
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 128m;
      client_body_buffer_size 1m;
    }}
  }}
}}
"""


def prepare_site():
    """The files nginx serves: 1 KiB, and 64 MiB of random bytes (so nothing compresses)."""
    root = os.path.join(OUT, "site")
    os.makedirs(os.path.join(root, "upload"), exist_ok=True)
    os.chmod(os.path.join(root, "upload"), 0o777)   # nginx's workers (nobody) store uploads here
    for name, size in (("1k", 1024), ("64m", 64 * MIB)):
        path = os.path.join(root, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as out:
                out.write(os.urandom(size))
    return root


def start_nginx(root):
    port = free_port()
    conf = os.path.join(OUT, "nginx.conf")
    with open(conf, "w") as out:
        out.write(NGINX_CONF.format(out=OUT, port=port, root=root))
    proc = Proc("nginx", ["nginx", "-c", conf, "-p", OUT, "-g", "daemon off;"])
    wait_listening(port)
    return proc, port


# --- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_SIZES = {"B": 1 / MIB, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}


def _ms(text):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(url, host, seconds, connections, extra_headers=(), script=None):
    """wrk's figures: rps, MB/s, p50/p99 latency in ms, errors (socket errors + non-2xx/3xx).
    `script`: a wrk Lua script (e.g. one that POSTs). A report we cannot read is run once more,
    then an error that shows it."""
    argv = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--latency", "-H", "Host: " + host]
    for header in extra_headers:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", script]
    for attempt in (1, 2):
        text = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
        try:
            return _wrk_figures(text)
        except (AttributeError, ValueError):
            progress("could not read wrk's report%s:\n%s" % (", running it again" if attempt == 1 else "", text))
    raise RuntimeError("wrk's report for %s is unreadable; see above" % url)


def _wrk_figures(text):
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "mbps": float(transfer.group(1)) * _SIZES[transfer.group(2)],
        # Anchored: "77.50%" at the end of the Req/Sec line must not pass for the 50% line.
        "p50": _ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1)),
        "p99": _ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1)),
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
    }


def versions():
    def first_line(argv):
        try:
            result = subprocess.run(argv, capture_output=True, text=True)
            return (result.stdout or result.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    import gevent
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
        "gevent": gevent.__version__, "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]), "node": first_line(["node", "--version"]),
    }
