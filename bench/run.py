"""The benchmark harness: `make bench` (or `.venv/bin/python bench/run.py`).

Runs, in one invocation and side by side, direct to nginx, our server + our client, and our
server + the npm `lt` client (and, for the keep-alive scenario, two floors: what gevent processes
that do the least work cost); then the paths users run (bench/users.py: stock clients at default
flags, nginx as distributions ship it, an origin that closes after each response, and the Node.js
localtunnel server beside ours); then writes bench/RESULTS.md. Installs wrk and nginx from Debian
when they are missing. A progress line on stderr says what it is doing.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import scenarios as sc  # noqa: E402
import tools  # noqa: E402
import users  # noqa: E402

TARGETS = ("direct",) + sc.CLIENTS
#: The keep-alive rounds also run the floors, so each is compared with direct seconds apart.
ROUND_PATHS = TARGETS + sc.FLOORS
#: The keep-alive scenario runs this many times for every path, the paths back to back in each
#: round: this machine's speed drifts by a quarter within a minute, so a ratio is only
#: trustworthy between runs seconds apart, and one round can land on a slow spell.
KEEPALIVE_ROUNDS = 3


def measure(rig, site, seconds):
    """Every scenario for every path, in a fixed order (keep-alive in rounds, see above)."""
    plan = []
    for number in range(KEEPALIVE_ROUNDS):
        order = ROUND_PATHS[number % len(ROUND_PATHS):] + ROUND_PATHS[:number % len(ROUND_PATHS)]
        plan += [(("keepalive", which, number), lambda w=which: sc.keepalive(rig, w, seconds)) for which in order]
    for which in TARGETS:
        plan += [(("close", which), lambda w=which: sc.connection_close(rig, w, seconds)),
                 (("download", which), lambda w=which: sc.download(rig, w, seconds, site)),
                 (("upload", which), lambda w=which: sc.upload(rig, w, site)),
                 (("websocket", which), lambda w=which: sc.websocket(rig, w, max(2, seconds // 2)))]
    results = {}
    for number, (key, step) in enumerate(plan, 1):
        round_text = " (round %d of %d)" % (key[2] + 1, KEEPALIVE_ROUNDS) if len(key) == 3 else ""
        tools.progress("[%d/%d] %s via %s%s" % (number, len(plan), key[0], sc.LABEL[key[1]], round_text))
        results[key] = step()
    return median_rounds(results)


def median_rounds(results):
    """One keep-alive figure per path: the round whose ratio to direct (measured in that same
    round) is the median, with every round's ratio and p99 kept under "rounds"."""
    runs = {which: [results.pop(("keepalive", which, number)) for number in range(KEEPALIVE_ROUNDS)]
            for which in ROUND_PATHS}
    for which in ROUND_PATHS:
        for run, direct in zip(runs[which], runs["direct"]):
            run["ratio"] = run["rps"] / direct["rps"]
        chosen = dict(sorted(runs[which], key=lambda run: (run["ratio"], run["rps"]))[KEEPALIVE_ROUNDS // 2])
        chosen["rounds"] = [(run["ratio"], run["p99"]) for run in runs[which]]
        results["keepalive", which] = chosen
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run (default 10)")
    parser.add_argument("--out", default=os.path.join(tools.ROOT, "bench", "RESULTS.md"))
    args = parser.parse_args(argv)
    tools.ensure_tools()
    os.makedirs(tools.OUT, exist_ok=True)
    tools.raise_fd_limit()
    site = tools.prepare_site()
    rig = sc.Rig(site)
    try:
        results = measure(rig, site, args.seconds)
        tools.progress("time to first byte")
        first = {"server": sc.first_byte_server(rig), "rss": sc.client_memory(rig)}
        for kind in sc.CLIENTS:
            first[kind] = sc.first_byte_client(rig, kind, 1)
    finally:
        rig.stop()
    tools.progress("server memory with 1,000 tunnels of 10 idle sockets")
    memory = sc.server_memory()
    users_results, node_missing = users.measure(site, args.seconds)
    if node_missing:
        tools.progress("no Node server column: " + node_missing)
    meta = dict(tools.versions(), seconds=args.seconds, date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                command="python bench/run.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv or sys.argv[1:])))
    report.write(args.out, meta, results, memory, first, users_results, node_missing)
    tools.progress("wrote %s" % os.path.relpath(args.out, tools.ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
