"""The benchmark harness's own arithmetic (reading wrk's report, pairing keep-alive rounds) and
bench/python_path.py measuring a path that really proxies. A mistake here would not crash the
benchmark, it would print a wrong figure (one did once)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import report  # noqa: E402
import run  # noqa: E402
import tools  # noqa: E402

WRK_REPORT = """Running 10s test @ http://127.0.0.1:18080/1k
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.65ms    2.01ms  40.12ms   77.50%
    Req/Sec     7.31k   401.22     8.01k    77.50%
  Latency Distribution
     50%    6.65ms
     75%    7.40ms
     90%    8.90ms
     99%   12.13ms
  72803 requests in 10.00s, 87.71MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   7280.30
Transfer/sec:      8.77MB
"""


def test_wrk_report_is_read_from_its_own_lines():
    figures = tools._wrk_figures(WRK_REPORT)
    assert figures["rps"] == 7280.30
    assert figures["p50"] == 6.65      # not the 77.50% that ends the Req/Sec line
    assert figures["p99"] == 12.13
    assert figures["requests"] == 72803
    assert figures["errors"] == 3 + 3
    assert figures["mbps"] == 8.77


def _round(direct, ours, npm, number):
    return {("keepalive", "direct", number): {"rps": direct, "p99": 1.0},
            ("keepalive", "python", number): {"rps": ours, "p99": 10.0 + number},
            ("keepalive", "inspected", number): {"rps": ours * (0.95 if number == 1 else 0.8), "p99": 12.0},
            ("keepalive", "node", number): {"rps": npm, "p99": 8.0},
            ("keepalive", "splice", number): {"rps": direct / 4, "p99": 5.0},
            ("keepalive", "http", number): {"rps": direct / 5, "p99": 6.0}}


def test_keepalive_ratios_pair_runs_from_the_same_round():
    results = {}
    # A slow spell in round 1 slows every path: paired, the ratio does not move.
    assert run.KEEPALIVE_ROUNDS == 3
    for number, speed in enumerate((1.0, 0.5, 1.0)):
        results.update(_round(80000 * speed, 8000 * speed * (1 + number / 10), 12000 * speed, number))
    merged = run.median_rounds(results)
    assert set(merged) == {("keepalive", which) for which in ("direct", "python", "inspected", "node", "splice", "http")}
    ours = merged["keepalive", "python"]
    assert [round(ratio, 3) for ratio, _ in ours["rounds"]] == [0.1, 0.11, 0.12]
    assert round(ours["ratio"], 3) == 0.11 and ours["p99"] == 11.0    # the median round, whole
    assert round(report._ratio(merged, "keepalive", "rps", "node"), 3) == 0.15
    assert any("0.110 × (p99 11.00 ms)" in line for line in report.rounds_lines(merged))
    assert merged["keepalive", "http"]["ratio"] == 0.2
    # The inspector's share is paired per round too: 0.8, 0.95, 0.8, so the median misses 0.90.
    (line,) = report.inspector_lines(merged)
    assert "0.800, 0.950, 0.800; median 0.800" in line and "(target at least 0.90: **not met**)" in line


def test_python_path_measures_requests_that_are_really_proxied():
    # A subprocess: the tool replaces lt_client.Local.get, which tests in this process use.
    # It checks itself that each request comes back as the origin's response before timing it.
    tool = os.path.join(os.path.dirname(run.__file__), "python_path.py")
    done = subprocess.run([sys.executable, tool, "--requests", "200"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = dict(re.findall(r"^(server|client, --inspect=off|client, inspector on): ([\d.]+) us of Python per request$",
                              done.stdout, re.M))
    assert set(figures) == {"server", "client, --inspect=off", "client, inspector on"}
    assert all(0 < float(us) < 1000 for us in figures.values())


def _wrk(rps, p50=1.0, p99=2.0, errors=0, requests=1000, mbps=0.0):
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "requests": requests, "mbps": mbps}


def test_users_targets_compare_with_the_node_server_in_the_same_scenario():
    results = {("keepalive", "ours+npm"): _wrk(15000, p50=3.0), ("keepalive", "node+npm"): _wrk(5000),
               ("close", "ours+npm"): _wrk(5000), ("close", "node+npm"): _wrk(3000),
               ("closing-get", "ours+python"): _wrk(100, errors=0, requests=500)}
    rows = {figure: measured for figure, _, measured in report.users_targets(results)}
    assert rows["npm lt through our server, keep-alive req/s"] == "3.00 × **met**"
    assert rows["npm lt through our server, `Connection: close` req/s"] == "1.67 × **not met**"
    assert rows["npm lt through our server, keep-alive p50"] == "3.00 ms **met**"
    # Too few requests to show nothing is lost, though none was.
    assert rows["closing origin: GET, 20 keep-alive connections, our client"] == "0 lost of 500 **not met**"
    # Without the Node server (../shared absent) the column says so instead of a verdict.
    del results["keepalive", "node+npm"]
    rows = {figure: measured for figure, _, measured in report.users_targets(results)}
    assert rows["npm lt through our server, keep-alive req/s"].startswith("not measured")
    table = "\n".join(report.users_lines(results, "not installed"))
    assert "No Node server column in this run: not installed." in table
    assert "| 1 KiB GET, 50 keep-alive connections | our server + npm lt | 15000.0 req/s |" in table
