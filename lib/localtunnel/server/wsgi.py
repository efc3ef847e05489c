"""Answering root-host requests on the front port with the API app, in-process.

The Node server has one port for the API and the tunnels; so do we. A request the front proxy
has already read and parsed is turned into a WSGI environ, the Flask app answers, and the
answer is written back on the same visitor connection. No API call takes a body: the front reads
any body a request carries (refusing one past MAX_API_BODY with 413) and throws it away, and the
app sees an empty wsgi.input.
"""
import io
import sys
from urllib.parse import unquote_to_bytes

from ..wire import protocol
from ..wire.http11 import origin_form

#: Set in the WSGI environ for a request that came in on the public port, so the Host it carries
#: is the public one and goes into the tunnel URL as sent (api.py reads it).
FRONT_ENVIRON_KEY = "localtunnel.front"

#: API calls carry no payload worth the name; a larger body is refused with 413.
MAX_API_BODY = 65536


def build_environ(req, remote_addr, server_port):
    path, _, query = origin_form(req).partition(b"?")
    environ = {
        "REQUEST_METHOD": req.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": "localtunnel",
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": req.version.decode("latin-1"),
        "REMOTE_ADDR": remote_addr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        FRONT_ENVIRON_KEY: True,
    }
    for name, values in req.fields.items():
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = ",".join(v.decode("latin-1") for v in values)
    return environ


def call_app(app, environ, keep_alive):
    """Run the WSGI app and return its whole response as bytes, ready to send."""
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, headers

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    headers = [(k, v) for k, v in started["headers"] if k.lower() != "connection"]
    if not any(k.lower() == "content-length" for k, _ in headers):
        headers.append(("Content-Length", str(len(body))))
    headers.append(("Connection", "keep-alive" if keep_alive else "close"))
    code, _, phrase = started["status"].partition(" ")
    # Werkzeug shouts ("403 FORBIDDEN"); say it the way the Node server does.
    status_line = "HTTP/1.1 %s %s" % (code, protocol.reason(int(code)) if code.isdigit() else phrase)
    lines = [status_line] + ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
