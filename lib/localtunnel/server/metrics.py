"""Prometheus metrics for one server, served at /metrics on the root host.

One CollectorRegistry per server (state handed in, not the library's global registry), so tests
can run several servers in one process. What changes per request is kept in plain numbers and
turned into metric families only when scraped: prometheus_client's Counter and Histogram take a
lock on every update, and the five updates of a proxied request were 5% of the server's CPU in a
py-spy profile of 1 KiB keep-alive requests.
"""
import bisect
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .. import __version__

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ERROR_KINDS = ("no-such-tunnel", "no-free-socket", "tunnel-closed", "bad-response", "response-timeout",
               "bad-request", "head-timeout", "busy", "node-unreachable", "registry-unreachable", "not-a-node",
               "auth-required", "address-not-allowed", "https-only",
               "bad-socket-secret", "socket-limit")
#: Upper bounds (seconds) of the socket-wait histogram's buckets.
WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30)


class Metrics:
    def __init__(self, registry, node=None):
        """`registry` is the tunnel registry: tunnel and socket counts are read when scraped.
        `node`, in a cluster, labels every series: `gunicorn -w N` workers share one port, so
        one scrape reaches any of them, and only the label tells their series apart."""
        self.started = time.time()
        self.node = node
        self.collectors = CollectorRegistry()
        self.visitors = _Level()
        self.by_class = [0] * len(STATUS_CLASSES)
        self.bytes_in = self.bytes_out = 0
        self.waits = [0] * (len(WAIT_BUCKETS) + 1)     # per bucket, not cumulative; the last is +Inf
        self.wait_sum = 0.0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.handed_over = 0    # visitor connections given to the node holding their tunnel
        self.sockets_passed = 0     # ... of which passed as sockets to a node of this machine
        self.collectors.register(_Families(self, registry))

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


class _Level:
    """A number that goes up and down (open visitor connections), read when scraped."""
    __slots__ = ("value",)

    def __init__(self):
        self.value = 0

    def inc(self):
        self.value += 1

    def dec(self):
        self.value -= 1


class _Families:
    """Every figure of a Metrics as metric families, at scrape time, with the node label first
    when there is a node."""

    def __init__(self, metrics, registry):
        self.metrics, self.registry = metrics, registry

    def collect(self):
        m = self.metrics
        node = [] if m.node is None else [m.node]
        labels = [] if m.node is None else ["node"]

        def family(kind, name, text, extra=(), **kwargs):
            return kind(name, text, labels=labels + list(extra), **kwargs)

        tunnels = family(GaugeMetricFamily, "localtunnel_tunnels", "Tunnels registered")
        tunnels.add_metric(node, len(self.registry))
        sockets = family(GaugeMetricFamily, "localtunnel_tunnel_sockets", "Tunnel sockets connected")
        sockets.add_metric(node, self.registry.total_sockets())
        visitors = family(GaugeMetricFamily, "localtunnel_visitor_connections", "Visitor connections open")
        visitors.add_metric(node, m.visitors.value)
        build = family(GaugeMetricFamily, "localtunnel_build_info", "The running version", ["version"])
        build.add_metric(node + [__version__], 1)
        requests = family(CounterMetricFamily, "localtunnel_proxied_requests",
                          "Requests proxied through tunnels, by response status class", ["status_class"])
        for name, count in zip(STATUS_CLASSES, m.by_class):
            requests.add_metric(node + [name], count)
        moved = family(CounterMetricFamily, "localtunnel_bytes", "Bytes proxied: in from visitors, out to visitors",
                       ["direction"])
        moved.add_metric(node + ["in"], m.bytes_in)
        moved.add_metric(node + ["out"], m.bytes_out)
        errors = family(CounterMetricFamily, "localtunnel_errors",
                        "Error answers the server wrote, by kind (X-Localtunnel-Status)", ["kind"])
        for kind, count in m.errors.items():
            errors.add_metric(node + [kind], count)
        handed = family(CounterMetricFamily, "localtunnel_handed_over_connections",
                        "Visitor connections handed to the cluster node that holds their tunnel: their socket "
                        "passed to a node of this machine, or spliced to the node's internal port", ["how"])
        handed.add_metric(node + ["socket"], m.sockets_passed)
        handed.add_metric(node + ["splice"], m.handed_over - m.sockets_passed)
        cumulative, buckets = 0, []
        for bound, count in zip(WAIT_BUCKETS + (float("inf"),), m.waits):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        wait = family(HistogramMetricFamily, "localtunnel_socket_wait_seconds",
                      "Time a request waited for a free tunnel socket")
        wait.add_metric(node, buckets, m.wait_sum)
        return [tunnels, sockets, visitors, build, requests, moved, errors, handed, wait]
