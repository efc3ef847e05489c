"""What the client's request inspector costs end to end (issue 15): keep-alive requests/s through
our client with the inspector on (its default) as a share of the same with `--inspect=off`, in
more alternating rounds than `make bench` runs, since one round swings by a fifth on this machine.

One server, one nginx origin, the two clients side by side. Usage:
.venv/bin/python bench/inspector_cost.py [--seconds 8] [--rounds 6]
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
import tools  # noqa: E402


def main(argv=None):
    args = tools.prepare_run(__doc__, argv, seconds=8, rounds=6)
    procs = []
    try:
        origin, origin_port = tools.start_nginx(tools.prepare_site())
        server, port = scenarios.start_server("inspector-server")
        procs += [origin, server]
        names = {}
        for kind in ("python", "inspected"):
            name = "bench-cost-" + kind
            client = scenarios.start_client(procs, kind, port, origin_port, name)
            names[kind] = (name, client)
        shares = []
        for number in range(1, args.rounds + 1):
            order = ("python", "inspected") if number % 2 else ("inspected", "python")
            rates = {}
            for kind in order:
                name, client = names[kind]
                run = tools.run_wrk_cpu("http://127.0.0.1:%d/1k" % port, name + ".localhost", args.seconds, 50,
                                        {"server": server.pid, "client": client.pid})
                rates[kind] = run["rps"]
                print("round %d, %-9s %7.0f req/s, p99 %5.2f ms; CPU us/request: %s" % (
                    number, "on" if kind == "inspected" else "off", run["rps"], run["p99"],
                    ", ".join("%s %.1f" % (who, sum(pair)) for who, pair in run["cpu"].items())), flush=True)
            shares.append(rates["inspected"] / rates["python"])
        print("inspector on / off, by round: %s; median %.3f, mean %.3f" % (
            ", ".join("%.3f" % share for share in shares), statistics.median(shares), statistics.mean(shares)))
    finally:
        tools.stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
