"""Tunnel sockets through the public port against the tunnel's own port (issue 16, part 3):
keep-alive and `Connection: close`, side by side in one run, alternating.

One plain server, one nginx origin, and two of our clients (`--inspect=off`): one at its default
(its sockets upgrade through the public port, since our server offers it), one with
`--use-tunnel-port`. Once a socket is open the two carry requests the same way, so this checks
that the route costs nothing per request. Usage: .venv/bin/python bench/socket_route.py
[--seconds 5] [--rounds 2]
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
import tools  # noqa: E402

ROUTES = {"public port": (), "tunnel port": ("--use-tunnel-port",)}


def main(argv=None):
    args = tools.prepare_run(__doc__, argv, seconds=5, rounds=2)
    procs = []
    try:
        origin, origin_port = tools.start_nginx(tools.prepare_site())
        server, port = scenarios.start_server("route-server")
        procs += [origin, server]
        clients = {}
        for number, (route, extra) in enumerate(ROUTES.items()):
            name = "bench-route-%d" % number
            client = scenarios.start_client(procs, "python", port, origin_port, name, extra)
            clients[route] = (name, client)
        for number in range(1, args.rounds + 1):
            for mode, headers in (("keep-alive", ()), ("close", ("Connection: close",))):
                order = list(clients.items()) if number % 2 else list(clients.items())[::-1]
                for route, (name, client) in order:
                    run = tools.run_wrk_cpu("http://127.0.0.1:%d/1k" % port, name + ".localhost", args.seconds, 50,
                                            {"server": server.pid, "client": client.pid}, headers)
                    print("round %d, %-10s sockets via the %-11s %7.0f req/s, p99 %6.2f ms, errors %d; "
                          "CPU us/request: %s" % (number, mode, route, run["rps"], run["p99"], run["errors"],
                                                  ", ".join("%s %.1f" % (who, sum(pair))
                                                            for who, pair in run["cpu"].items())), flush=True)
    finally:
        tools.stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
