"""What operators see: Prometheus metrics that count real traffic, status and health endpoints,
and one access-log line per proxied request."""
import logging
import re
import sys

import requests

import helpers
from helpers import FakeClient, new_tunnel, visit


def scrape(server, accept="text/plain"):
    return requests.get("http://127.0.0.1:%d/metrics" % server.port,
                        headers={"Host": "localhost", "Accept": accept})


def sample(text, name, labels=""):
    match = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    assert match, "%s%s not in metrics:\n%s" % (name, labels, text)
    return float(match.group(1))


def test_metrics_count_real_traffic(server):
    info = new_tunnel(server.port)
    client = FakeClient(info, 3)
    helpers.wait_sockets(server.port, info["id"], 3)
    for _ in range(4):
        assert visit(server.port, info["id"], "/x").status_code == 200
    assert visit(server.port, "nobody-here", "/").status_code == 404
    answer = scrape(server)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    text = answer.text
    assert sample(text, "localtunnel_proxied_requests_total", '{status_class="2xx"}') == 4
    assert sample(text, "localtunnel_errors_total", '{kind="no-such-tunnel"}') == 1
    assert sample(text, "localtunnel_tunnels") == 1
    assert sample(text, "localtunnel_tunnel_sockets") == 3
    assert sample(text, "localtunnel_socket_wait_seconds_count") == 4
    assert sample(text, "localtunnel_socket_wait_seconds_bucket", '{le="+Inf"}') == 4
    answer_bytes = len(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nGET /x HTTP/1.1")   # what ok_handler sends
    assert sample(text, "localtunnel_bytes_total", '{direction="out"}') == 4 * answer_bytes
    assert sample(text, "localtunnel_bytes_total", '{direction="in"}') > 0
    assert sample(text, "localtunnel_visitor_connections") >= 1     # this scrape's own connection
    client.close()


def test_socket_wait_buckets_count_each_wait_at_or_below_their_bound():
    from localtunnel.server.metrics import Metrics

    class NoTunnels:
        def __len__(self):
            return 0

        def total_sockets(self):
            return 0

    metrics = Metrics(NoTunnels())
    for waited in (0.0, 0.001, 0.0011, 2.0, 99.0):
        metrics.request(200, 0, 0, waited)
    text = metrics.exposition().decode()
    expected = {"0.0005": 1, "0.001": 2, "0.005": 3, "1.0": 3, "5.0": 4, "30.0": 4, "+Inf": 5}
    for bound, count in expected.items():
        assert sample(text, "localtunnel_socket_wait_seconds_bucket", '{le="%s"}' % bound) == count
    assert sample(text, "localtunnel_socket_wait_seconds_sum") == 0.0 + 0.001 + 0.0011 + 2.0 + 99.0


def test_a_tunnel_client_asking_for_the_name_metrics_still_gets_it(server):
    answer = scrape(server, accept="application/json, text/plain, */*")
    assert answer.json()["id"] == "metrics"


def test_status_keeps_the_node_shape_and_adds_uptime_and_version(server):
    status = requests.get("http://127.0.0.1:%d/api/status" % server.port, headers={"Host": "localhost"}).json()
    assert status["tunnels"] == 0 and status["mem"]["rss"] > 0
    assert status["uptime"] >= 0 and status["version"] == "0.1.0" and status["sockets"] == 0


def test_health_endpoint_for_load_balancers(server):
    answer = requests.get("http://127.0.0.1:%d/api/health" % server.port, headers={"Host": "localhost"})
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_one_access_line_per_proxied_request(server, caplog):
    info = new_tunnel(server.port)
    client = FakeClient(info, 1)
    helpers.wait_sockets(server.port, info["id"], 1)
    with caplog.at_level(logging.INFO, logger="localtunnel.access"):
        visit(server.port, info["id"], "/page?q=1", headers={"User-Agent": "probe/1", "Referer": "http://r/"})
        visit(server.port, "nobody-here", "/")
    lines = [r.getMessage() for r in caplog.records if r.name == "localtunnel.access"]
    assert len(lines) == 2
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /page\?q=1 HTTP/1\.1" '
                        r'200 \d+ "http://r/" "probe/1" tunnel=%s wait=[\d.]+ms time=[\d.]+ms' % info["id"], lines[0])
    assert lines[1].endswith("error=no-such-tunnel") and '" 404 - "' in lines[1]
    client.close()


def test_lt_server_prints_access_lines_on_stdout(procs):
    proc = procs([sys.executable, "lt_server.py", "--port", "0", "--address", "127.0.0.1", "-d", "localhost"])
    port = int(proc.wait_for(r"listening on 127\.0\.0\.1:(\d+)", 15).group(1))
    visit(port, "nobody-here", "/hello")
    proc.wait_for(r'(?m)^127\.0\.0\.1 - - \[.*\] "GET /hello HTTP/1\.1" 404 - "-" "python-requests/[\d.]+" '
                  r'tunnel=nobody-here wait=0\.0ms time=[\d.]+ms error=no-such-tunnel$', 5)
