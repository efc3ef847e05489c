"""The access log: one line per visitor request, in the combined log format plus the tunnel's name,
the wait for a tunnel socket and the time taken (and our error's code, for our own pages)."""
import logging
import time

access_log = logging.getLogger("localtunnel.access")


def log_access(ip, req, status, size, tunnel_id, waited, started, error=None):
    """`127.0.0.1 - - [24/Nov/2026:18:20:00 +0000] "GET / HTTP/1.1" 200 1024 "-" "curl/8.0"
    tunnel=calm-otter-42 wait=0.1ms time=2.3ms`, and `error=<kind>` for our own error pages."""
    if not access_log.isEnabledFor(logging.INFO):
        return      # formatting a line per request is not free; skip it when nobody reads it
    access_log.info(
        '%s - - [%s] "%s %s %s" %d %s "%s" "%s" tunnel=%s wait=%.1fms time=%.1fms%s',
        ip, time.strftime("%d/%b/%Y:%H:%M:%S %z"), req.method.decode("latin-1"), req.target.decode("latin-1"),
        req.version.decode("latin-1"), status, size or "-", _header(req, b"referer"), _header(req, b"user-agent"),
        tunnel_id, waited * 1000, (time.monotonic() - started) * 1000, " error=" + error if error else "")


def _header(req, name):
    value = req.get(name)
    return value.decode("latin-1").replace('"', "%22") if value else "-"
