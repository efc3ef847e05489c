"""Keep-alive through two trees of this project, alternately, on the same machine in the same minutes.

The harness's runs drift by a quarter within a minute, so a change's cost shows only when the
tree before it and the tree after it run back to back, more than once, in alternating order. Each tree runs with its own
lib/ first on PYTHONPATH, so its server and client are its own even beside an editable install.

Usage: .venv/bin/python bench/paired.py OLD_TREE NEW_TREE [--rounds 2] [--seconds 5]
(make a tree of an older commit with `git worktree add /tmp/old COMMIT`; it needs
tests/node/node_modules, a symlink to this checkout's will do). Prints req/s, p99 and CPU per
request of the server and the client for our client and npm lt.
"""
import argparse
import os
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))

# Run inside each tree's own bench/: one rig, keep-alive through each client kind, one line each.
_ONE_TREE = """
import sys
sys.path.insert(0, sys.argv[1] + "/bench")
import scenarios, tools
tools.raise_fd_limit()
rig = scenarios.Rig(tools.prepare_site())
try:
    for kind in scenarios.CLIENTS:
        run = scenarios.keepalive(rig, kind, int(sys.argv[2]))
        cpu = run["cpu"]
        print("%s %s: %.0f req/s, p99 %.2f ms, server %.1f us, client %.1f us per request"
              % (sys.argv[1], kind, run["rps"], run["p99"], sum(cpu["server"]), sum(cpu["client"])), flush=True)
finally:
    rig.stop()
"""


def run_tree(tree, seconds):
    env = dict(os.environ, PYTHONPATH=os.path.join(tree, "lib"))
    out = subprocess.run([sys.executable, "-c", _ONE_TREE, tree, str(seconds)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if " req/s" in line]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, help="two checkouts of this project: before and after")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    trees = [os.path.abspath(tree) for tree in args.trees]
    for number in range(1, args.rounds + 1):
        print("round %d" % number, flush=True)
        # A, B then B, A: the machine drifts within a round, and a fixed order would charge the
        # drift to whichever tree always runs second.
        for tree in (trees if number % 2 else trees[::-1]):
            for line in run_tree(tree, args.seconds):
                print("  " + line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
