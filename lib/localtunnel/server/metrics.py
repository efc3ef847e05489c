"""Prometheus metrics for one server, served at /metrics on the root host.

One CollectorRegistry per server (state handed in, not the library's global registry), so tests
can run several servers in one process. What changes per request is kept in plain numbers and
turned into metric families only when scraped: prometheus_client's Counter and Histogram take a
lock on every update, and the five updates of a proxied request were 5% of the server's CPU in a
py-spy profile of 1 KiB keep-alive requests.
"""
import bisect
import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from .. import __version__

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ERROR_KINDS = ("no-such-tunnel", "no-free-socket", "tunnel-closed", "bad-response", "response-timeout",
               "bad-request", "head-timeout", "busy")
#: Upper bounds (seconds) of the socket-wait histogram's buckets.
WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30)


class Metrics:
    def __init__(self, registry):
        """`registry` is the tunnel registry: tunnel and socket counts are read when scraped."""
        self.started = time.time()
        self.collectors = CollectorRegistry()
        gauge = Gauge("localtunnel_tunnels", "Tunnels registered", registry=self.collectors)
        gauge.set_function(lambda: len(registry))
        gauge = Gauge("localtunnel_tunnel_sockets", "Tunnel sockets connected", registry=self.collectors)
        gauge.set_function(registry.total_sockets)
        self.visitors = Gauge("localtunnel_visitor_connections", "Visitor connections open",
                              registry=self.collectors)
        info = Gauge("localtunnel_build_info", "The running version", ["version"], registry=self.collectors)
        info.labels(__version__).set(1)
        self.by_class = [0] * len(STATUS_CLASSES)
        self.bytes_in = self.bytes_out = 0
        self.waits = [0] * (len(WAIT_BUCKETS) + 1)     # per bucket, not cumulative; the last is +Inf
        self.wait_sum = 0.0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.collectors.register(_Traffic(self))

    def request(self, status, bytes_in, bytes_out, waited):
        self.by_class[min(max(status // 100, 1), 5) - 1] += 1
        self.waits[bisect.bisect_left(WAIT_BUCKETS, waited)] += 1
        self.wait_sum += waited
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def error(self, kind):
        if kind in self.errors:
            self.errors[kind] += 1

    def uptime(self):
        return time.time() - self.started

    def exposition(self):
        return generate_latest(self.collectors)


class _Traffic:
    """The per-request figures of a Metrics, as metric families, at scrape time."""

    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        requests = CounterMetricFamily("localtunnel_proxied_requests",
                                       "Requests proxied through tunnels, by response status class",
                                       labels=["status_class"])
        for name, count in zip(STATUS_CLASSES, m.by_class):
            requests.add_metric([name], count)
        moved = CounterMetricFamily("localtunnel_bytes", "Bytes proxied: in from visitors, out to visitors",
                                    labels=["direction"])
        moved.add_metric(["in"], m.bytes_in)
        moved.add_metric(["out"], m.bytes_out)
        errors = CounterMetricFamily("localtunnel_errors",
                                     "Error answers the server wrote, by kind (X-Localtunnel-Status)",
                                     labels=["kind"])
        for kind, count in m.errors.items():
            errors.add_metric([kind], count)
        cumulative, buckets = 0, []
        for bound, count in zip(WAIT_BUCKETS + (float("inf"),), m.waits):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        wait = HistogramMetricFamily("localtunnel_socket_wait_seconds",
                                     "Time a request waited for a free tunnel socket",
                                     buckets=buckets, sum_value=m.wait_sum)
        return [requests, moved, errors, wait]
