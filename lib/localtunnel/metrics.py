"""Prometheus metrics for one server, served at /metrics on the root host.

One CollectorRegistry per server (state handed in, not the library's global registry), so tests
can run several servers in one process. Labelled children are bound once: `inc()` on a bound
child is all the per-request path pays.
"""
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import __version__

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
ERROR_KINDS = ("no-such-tunnel", "no-free-socket", "tunnel-closed", "bad-response", "response-timeout",
               "bad-request", "head-timeout", "busy")


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
        requests = Counter("localtunnel_proxied_requests", "Requests proxied through tunnels, by response status class",
                           ["status_class"], registry=self.collectors)
        self._by_class = {name: requests.labels(name) for name in STATUS_CLASSES}
        moved = Counter("localtunnel_bytes", "Bytes proxied: in from visitors, out to visitors",
                        ["direction"], registry=self.collectors)
        self.bytes_in, self.bytes_out = moved.labels("in"), moved.labels("out")
        self.socket_wait = Histogram("localtunnel_socket_wait_seconds", "Time a request waited for a free tunnel socket",
                                     buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30),
                                     registry=self.collectors)
        errors = Counter("localtunnel_errors", "Error answers the server wrote, by kind (X-Localtunnel-Status)",
                         ["kind"], registry=self.collectors)
        self._errors = {kind: errors.labels(kind) for kind in ERROR_KINDS}
        info = Gauge("localtunnel_build_info", "The running version", ["version"], registry=self.collectors)
        info.labels(__version__).set(1)

    def request(self, status, bytes_in, bytes_out, waited):
        self._by_class[STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]].inc()
        self.socket_wait.observe(waited)
        self.bytes_in.inc(bytes_in)
        self.bytes_out.inc(bytes_out)

    def error(self, kind):
        counter = self._errors.get(kind)
        if counter is not None:
            counter.inc()

    def uptime(self):
        return time.time() - self.started

    def exposition(self):
        return generate_latest(self.collectors)
