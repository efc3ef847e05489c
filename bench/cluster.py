"""What a cluster costs (issue 14): a visitor at the node that holds the tunnel against one at
another node, which hands its connection over; Redis commands per visitor request and per
renewal; and one machine's cores as nodes, under `gunicorn -w 2`, against one process alone.

Three server processes with --redis (one redis-server, persistence off), our client on node A in
front of nginx, wrk at each node in rotating rounds, keep-alive then close, and the CPU every
process spent per request. Node B hands visitors to A as nodes of one machine do, passing the
socket itself (--pass-sockets, the default); node C as nodes of different machines do, splicing
the connection to A's internal port (`Connection: close` requests passed on one by one), which
--pass-sockets=off forces here. Usage: .venv/bin/python bench/cluster.py [--seconds 5] [--rounds 2]
(after `make bench` installed wrk and nginx, and `make test-setup` redis-server).
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
import tools  # noqa: E402

LEASE = 10


def start_node(name, redis_url, lease=LEASE, extra=()):
    """One node of the cluster: our server with --redis, as scenarios.start_server starts it."""
    return scenarios.start_server(name, extra=("--redis", redis_url, "--lease", str(lease), *extra))


def main(argv=None):
    args = tools.prepare_run(__doc__, argv, seconds=5, rounds=2)
    procs = []
    try:
        redis_proc, url = tools.start_redis("cluster-redis")
        procs.append(redis_proc)
        watcher = redis.Redis.from_url(url)
        nginx, nginx_port = tools.start_nginx(tools.prepare_site())
        procs.append(nginx)
        node_a, port_a = start_node("cluster-node-a", url)
        node_b, port_b = start_node("cluster-node-b", url)
        node_c, port_c = start_node("cluster-node-c", url, extra=("--pass-sockets", "off"))
        procs += [node_a, node_b, node_c]
        client = scenarios.start_client(procs, "python", port_a, nginx_port, "bench-cluster")
        pids = {"node A": node_a.pid, "node B": node_b.pid, "node C": node_c.pid, "client": client.pid}
        for number, (mode, headers) in enumerate(
                [("keep-alive", ())] * args.rounds + [("close", ("Connection: close",))] * args.rounds, 1):
            paths = (("%s at the owner (A)" % mode, port_a),
                     ("%s at B, socket passed" % mode, port_b),
                     ("%s at C, spliced" % mode, port_c))
            for label, port in paths[number % 3:] + paths[:number % 3]:
                before = watcher.info("stats")["total_commands_processed"]
                run = tools.run_wrk_cpu("http://127.0.0.1:%d/1k" % port, "bench-cluster.localhost", args.seconds,
                                        50, pids, headers)
                commands = watcher.info("stats")["total_commands_processed"] - before - 1
                print("round %d, visitors %-28s %7.0f req/s, p99 %5.2f ms, errors %d; CPU us/request "
                      "(user+system): %s; Redis commands %d (%.4f per request, renewals included)"
                      % (number, label, run["rps"], run["p99"], run["errors"],
                         ", ".join("%s %.1f (%.1f+%.1f)" % (name, sum(pair), *pair) for name, pair in run["cpu"].items()),
                         commands, commands / max(run["requests"], 1)), flush=True)
        before = watcher.info("stats")["total_commands_processed"]
        gevent.sleep(LEASE)
        idle = watcher.info("stats")["total_commands_processed"] - before - 1
        print("idle for %d s (lease %d s, three nodes renewing every %.1f s, nothing else): %d Redis commands"
              % (LEASE, LEASE, LEASE / 3, idle), flush=True)
        tools.stop_all(procs[2:])
        del procs[2:]
        for number in range(1, args.rounds + 1):
            for kind in (("one process", "gunicorn -w 2") if number % 2 else ("gunicorn -w 2", "one process")):
                workers(kind, url, nginx_port, args.seconds, number)
    finally:
        tools.stop_all(procs)
    return 0


def workers(kind, redis_url, nginx_port, seconds, number):
    """One machine's server as one process (no Redis), or as gunicorn's two gevent workers, each
    a node: the kernel spreads visitors over the workers, so about half are handed over to the
    worker that holds the tunnel. CPU per request of each process, over all requests."""
    port = tools.free_port()
    env = {"LT_PORT": str(port), "LT_ADDRESS": "127.0.0.1", "LT_DOMAIN": "localhost"}
    if kind == "one process":
        argv = [sys.executable, "lt_server.py", "--log-level", "warning"]
    else:
        argv = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "-b", "127.0.0.1:0",
                "--log-level", "warning", "lt_server:app"]
        env["LT_REDIS_URL"] = redis_url
    procs = [tools.Proc("cluster-%s" % kind.replace(" ", "-"), argv, env=env)]
    try:
        tools.wait_listening(port)
        client = scenarios.start_client(procs, "python", port, nginx_port, "bench-workers")
        pids = {"client": client.pid}
        workers = tools.children(procs[0].pid) or [procs[0].pid]
        pids.update(("worker %d" % n if kind != "one process" else "server", pid) for n, pid in enumerate(workers, 1))
        if kind != "one process":
            pids["arbiter"] = procs[0].pid
        run = tools.run_wrk_cpu("http://127.0.0.1:%d/1k" % port, "bench-workers.localhost", seconds, 50, pids,
                                own_only=True)
        print("round %d, %-14s %7.0f req/s, p99 %5.2f ms, errors %d; CPU us/request (user+system): %s"
              % (number, kind, run["rps"], run["p99"], run["errors"],
                 ", ".join("%s %.1f (%.1f+%.1f)" % (name, sum(pair), *pair) for name, pair in run["cpu"].items())),
              flush=True)
    finally:
        tools.stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
