"""Whether redis-py's hiredis parser helps a cluster node (issue 14): each registry operation a
node performs, timed with redis-py's pure-Python parser and with hiredis's, in one run.

A node talks to Redis only when a tunnel is created or ends, on a cache miss for a visitor of
another node's tunnel, and once per renewal tick; replies are a few short strings, except the
node list a tick reads (one entry per node). So the figure that matters is the time per
operation, with 100 live nodes in the registry. Usage, with hiredis importable (it is not a
dependency of ours; install it beside, not into, the project's venv):
  pip install --target /tmp/hiredis hiredis
  PYTHONPATH=/tmp/hiredis .venv/bin/python bench/redis_parser.py [--operations 5000]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import redis  # noqa: E402
from redis._parsers import _HiredisParser, _RESP2Parser  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

import tools  # noqa: E402
from localtunnel.server.cluster import SharedNames  # noqa: E402

NODES = 100


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(operation, count):
    """(wall us, CPU us of this process) per call."""
    wall, used = time.perf_counter(), cpu()
    for number in range(count):
        operation(number)
    return (time.perf_counter() - wall) * 1e6 / count, (cpu() - used) * 1e6 / count


def measure(url, parser, count, run):
    client = redis.Redis.from_url(url, parser_class=parser)
    names = SharedNames(client, "bench-node-%d" % run, "127.0.0.1", 10.0)
    names.port = 1
    names.renew()
    held = "held-name-%d" % run
    names.claim(held, "127.0.0.1")
    operations = {
        "owner lookup (a visitor's cache miss)": lambda n: names.owner(held),
        "renewal tick: liveness SET": lambda n: names.renew(),
        "renewal tick: the %d nodes' hosts (SCAN + MGET)" % NODES: lambda n: names.node_hosts(),
        "claim + release (a tunnel created and ended)": lambda n: (names.claim("name-%d" % n, "127.0.0.1"),
                                                                     names.release("name-%d" % n)),
    }
    return {label: timed(operation, count) for label, operation in operations.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        import hiredis  # noqa: F401
    except ImportError:
        print("hiredis is not importable: see this script's docstring for how to run it", file=sys.stderr)
        return 2
    procs = []
    try:
        redis_proc, url = tools.start_redis("parser-redis")
        procs.append(redis_proc)
        filler = redis.Redis.from_url(url)
        for number in range(NODES - 1):
            filler.set("lt:node:other-%d" % number, "10.0.%d.%d 80" % (number // 250, number % 250), px=600000)
        results = [(parser.__name__, measure(url, parser, args.operations, run)) for run, parser in
                   enumerate((_RESP2Parser, _HiredisParser, _RESP2Parser, _HiredisParser))]
        for label in results[0][1]:
            print("%-52s %s" % (label, "; ".join("%s %.1f us (CPU %.1f)" % ((name,) + figures[label])
                                                 for name, figures in results)), flush=True)
    finally:
        tools.stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
