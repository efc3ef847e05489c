"""The soak run: `make soak` (or `.venv/bin/python bench/soak.py --minutes 10`).

Mixed traffic through several tunnels for a bounded time while clients come and go, then three
verdicts on our server process: RSS grew less than 10% after warm-up, the open-file count is
flat, and no response was lost or corrupted. Not part of `make test`: it takes minutes.

Tunnels: one held by our client and one by the npm `lt` client for the whole run ("stable"),
and one whose client (ours and npm's in turn) is stopped every 15-30 s, by SIGTERM or SIGKILL,
and started again with the same name a moment later ("churn"). Visitors fetch /bytes of random
sizes (checked against the origin's pattern), POST random bodies to /echo (checked byte for
byte) and exchange WebSocket messages, over keep-alive connections.

A stable tunnel must answer every request correctly. The churn tunnel may refuse while its client
is down (404, 502, 504 with X-Localtunnel-Status) or cut a response its client died in, but never
leave a visitor without an answer or hand over wrong bytes. RSS and descriptors are compared at
two quiet points with the same tunnels up: after warm-up and at the end.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import loopback  # noqa: E402
import tools  # noqa: E402

#: The origin's /bytes (tests/node/origin.js): a 64 KiB block where byte i is i % 251, repeated.
PATTERN = bytes(i % 251 for i in range(65536)) * 16
SIZES = (0, 1, 1024, 65536, 1 << 20)
#: A request gets this long before it counts as lost.
REQUEST_TIMEOUT = 30
RSS_GROWTH_LIMIT = 0.10
#: Descriptors may differ by a handful at two quiet points (a log file reopened, a DNS socket).
FD_SLACK = 5


class Tally:
    def __init__(self):
        self.counts = {}
        self.examples = []

    def add(self, kind, what=None):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if what and len(self.examples) < 20:
            self.examples.append("%s: %s" % (kind, what))


class Rig:
    """Origin, server and the clients, as child processes logging to bench/out."""

    def __init__(self):
        self.origin = tools.Proc("soak-origin", ["node", tools.ORIGIN_JS])
        self.origin_port = int(self.origin.wait_for(r"listening (\d+)").group(1))
        self.port = tools.free_port()
        self.server = tools.Proc("soak-server", [
            sys.executable, "lt_server.py", "-p", str(self.port), "--address", "127.0.0.1", "-d", "localhost",
            "--grace", "2", "--new-per-minute", "1000", "--log-level", "warning"])
        tools.wait_listening(self.port)
        self.clients = {}
        self.churn_round = 0

    def start_client(self, name, kind):
        argv = ([tools.NODE_LT, "--host", "http://localhost:%d" % self.port, "--port", str(self.origin_port)]
                if kind == "npm" else
                [sys.executable, "lt_client.py", "-h", "http://localhost:%d" % self.port, "-p", str(self.origin_port)])
        proc = tools.Proc("soak-client-%s-%s" % (name, kind), argv + ["--subdomain", name])
        proc.wait_for(r"your url is: http://%s\." % name)
        self.clients[name] = proc
        loopback.wait_sockets(self.port, name, 10, timeout=20)

    def stop_client(self, name, how):
        proc = self.clients.pop(name)
        proc.popen.send_signal(how)
        proc.popen.wait(10)
        proc.log.close()

    def churn(self, life, stopped):
        """The churn tunnel's client: up for `life` seconds, down for a moment, forever."""
        while not stopped.is_set():
            kind = ("ours", "npm")[self.churn_round % 2]
            self.start_client("churn", kind)
            stopped.wait(random.uniform(*life))
            how = (signal.SIGTERM, signal.SIGKILL)[(self.churn_round // 2) % 2]
            self.stop_client("churn", how)
            self.churn_round += 1
            stopped.wait(random.uniform(1, 4))

    def server_figures(self):
        pid = self.server.pid
        return {"rss_mb": round(tools.rss_mb(pid), 1), "fds": len(os.listdir("/proc/%d/fd" % pid))}

    def stop(self):
        for name in list(self.clients):
            self.stop_client(name, signal.SIGTERM)
        self.server.stop()
        self.origin.stop()


# --- visitors ---------------------------------------------------------------------------------

def visitor(rig, tally, stopped, rng):
    session = requests.Session()
    try:
        visit_until(rig, tally, stopped, rng, session)
    finally:
        session.close()     # its keep-alive connections must not count at the quiet point


def visit_until(rig, tally, stopped, rng, session):
    while not stopped.is_set():
        name = rng.choice(("stable-ours", "stable-npm", "churn"))
        op = rng.random()
        try:
            if op < 0.55:
                fetch(rig, session, name, rng, tally)
            elif op < 0.9:
                echo(rig, session, name, rng, tally)
            else:
                websocket(rig, name, rng, tally)
        except (requests.RequestException, OSError, AssertionError) as exc:
            # No answer at all, or a cut one. Fine only where a client was just killed.
            if name == "churn" and not isinstance(exc, (requests.Timeout, TimeoutError)):
                tally.add("churn-cut")
            else:
                tally.add("lost", "%s %s: %r" % (name, type(exc).__name__, exc))
            session.close()
            session = requests.Session()


def judge(name, answer, expected, tally, what):
    if answer.status_code == 200:
        if answer.content == expected:
            tally.add("ok")
        else:
            tally.add("corrupt", "%s %s: %d bytes, expected %d" % (name, what, len(answer.content), len(expected)))
    elif name == "churn" and answer.headers.get("X-Localtunnel-Status"):
        tally.add("churn-refused")
    else:
        tally.add("lost", "%s %s: %d %s" % (name, what, answer.status_code, answer.text[:200]))


def fetch(rig, session, name, rng, tally):
    size = rng.choice(SIZES)
    answer = loopback.visit(rig.port, name, "/bytes?n=%d" % size, session=session, timeout=REQUEST_TIMEOUT)
    judge(name, answer, PATTERN[:size], tally, "GET /bytes?n=%d" % size)


def echo(rig, session, name, rng, tally):
    body = os.urandom(rng.choice(SIZES[:4]) + rng.randrange(100))
    answer = loopback.visit(rig.port, name, "/echo", method="POST", data=body, session=session, timeout=REQUEST_TIMEOUT)
    judge(name, answer, body, tally, "POST /echo (%d bytes)" % len(body))


def websocket(rig, name, rng, tally):
    host = "%s.localhost:%d" % (name, rig.port)
    try:
        sock = loopback.ws_connect(rig.port, host)
    except AssertionError as exc:       # not a 101: the tunnel refused, as it may while churning
        if name == "churn" and "X-Localtunnel-Status" in str(exc):
            tally.add("churn-refused")
            return
        raise
    with sock:
        sock.settimeout(REQUEST_TIMEOUT)
        for _ in range(3):
            payload = os.urandom(rng.randrange(1, 4096))
            loopback.ws_send(sock, payload)
            if loopback.ws_recv(sock) != (2, payload):
                tally.add("corrupt", "%s WebSocket echo" % name)
                return
        tally.add("ok")


# --- the run ----------------------------------------------------------------------------------

def traffic(rig, tally, seconds, workers, seed):
    stopped = gevent.event.Event()
    rngs = [random.Random(seed + i) for i in range(workers)]
    crowd = [gevent.spawn(visitor, rig, tally, stopped, rng) for rng in rngs]
    gevent.sleep(seconds)
    stopped.set()
    gevent.joinall(crowd, timeout=REQUEST_TIMEOUT + 5)
    gevent.killall(crowd)


def quiet_point(rig, churner, stop_churn):
    """Stop the churn, let its tunnel expire, and measure with only the stable tunnels up."""
    stop_churn.set()
    churner.join(timeout=60)
    gevent.sleep(5)     # past the 2 s grace: the churn tunnel and its port are gone
    return rig.server_figures()


def run(args):
    tools.ensure_tools()
    os.makedirs(tools.OUT, exist_ok=True)
    tools.raise_fd_limit()
    rig = Rig()
    tally, samples = Tally(), []
    try:
        rig.start_client("stable-ours", "ours")
        rig.start_client("stable-npm", "npm")
        phases = [("warm-up", args.warmup * 60), ("soak", args.minutes * 60 - args.warmup * 60)]
        figures = {}
        for phase, seconds in phases:
            stop_churn = gevent.event.Event()
            churner = gevent.spawn(rig.churn, (15, 30), stop_churn)
            sampler = gevent.spawn(sample, rig, samples, tally)
            tools.progress("%s: %d s of traffic through 3 tunnels" % (phase, seconds))
            traffic(rig, tally, seconds, args.workers, args.seed + len(figures) * 1000)
            sampler.kill()
            figures[phase] = quiet_point(rig, churner, stop_churn)
            tools.progress("%s done: %s, %s" % (phase, figures[phase], tally.counts))
    finally:
        rig.stop()
    return verdict(args, figures, tally, samples, rig.churn_round)


def sample(rig, samples, tally):
    started = time.monotonic()
    while True:
        gevent.sleep(30)
        figures = dict(rig.server_figures(), t=round(time.monotonic() - started), **tally.counts)
        samples.append(figures)
        tools.progress("sample %s" % figures)


def verdict(args, figures, tally, samples, churn_restarts):
    base, end = figures["warm-up"], figures["soak"]
    growth = (end["rss_mb"] - base["rss_mb"]) / base["rss_mb"]
    checks = {
        "rss growth < 10%": growth < RSS_GROWTH_LIMIT,
        "open files flat": end["fds"] <= base["fds"] + FD_SLACK,
        "nothing lost": tally.counts.get("lost", 0) == 0,
        "nothing corrupted": tally.counts.get("corrupt", 0) == 0,
        "traffic flowed": tally.counts.get("ok", 0) > 0,
    }
    result = {"command": "bench/soak.py --minutes %g --warmup %g --workers %d --seed %d"
                         % (args.minutes, args.warmup, args.workers, args.seed),
              "after_warmup": base, "at_end": end, "rss_growth": round(growth, 4),
              "counts": tally.counts, "churn_client_stops": churn_restarts, "examples": tally.examples, "checks": checks, "samples": samples}
    with open(os.path.join(tools.OUT, "soak.json"), "w") as out:
        json.dump(result, out, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0 if all(checks.values()) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="whole run, warm-up included (default 10)")
    parser.add_argument("--warmup", type=float, default=1, help="minutes before the baseline (default 1)")
    parser.add_argument("--workers", type=int, default=16, help="concurrent visitors (default 16)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.minutes:
        parser.error("--warmup must be above 0 and below --minutes")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
