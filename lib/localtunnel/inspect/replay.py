"""Replay: a captured request sent to the local service again, as it was or edited, through the
same code path as a request from the tunnel (so it is captured, marked as a replay).

build_request() is pure; replay() runs it through a socket pair whose far end the client serves
exactly like a tunnel socket.
"""
import base64
import re
import socket

import gevent

from ..transfer import relay
from ..wire.http11 import HttpError, parse_request_head
from . import view

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Headers a replay sets itself: the body's length, and nothing that describes the old connection.
_OWN = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive"))


class ReplayError(Exception):
    """The edits or the capture do not make a request; the message says why (a 400 or 409)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def build_request(exchange, edits):
    """The request bytes for a replay of `exchange`, with `edits` (a dict from the API: method,
    path, headers as [[name, value], ...], body as text or body_base64) applied."""
    data = b"".join(exchange.request)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ReplayError(409, "the request's head was not captured")
    req = parse_request_head(data[:end + 4])
    method = _checked(edits.get("method"), req.method, _TOKEN, "method")
    path = _checked(edits.get("path"), req.target, re.compile(rb"/[\x21-\x7e]*"), "path")
    original = [tuple(part.strip() for part in line.split(b":", 1)) for line in req.lines]
    headers = _headers(edits["headers"]) if "headers" in edits else original
    if not any(name.lower() == b"host" for name, _ in headers):
        # HTTP/1.1 needs one: edits that leave it out keep the request's own.
        headers = [pair for pair in original if pair[0].lower() == b"host"] + headers
    body = _body(edits, exchange, req, data[end + 4:])
    lines = [b"%s %s HTTP/1.1" % (method, path)]
    lines += [name + b": " + value for name, value in headers if name.lower() not in _OWN]
    if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _checked(value, original, pattern, what):
    if value is None:
        return original
    encoded = str(value).encode("utf-8")
    if not pattern.fullmatch(encoded):
        raise ReplayError(400, "%s %r is not valid in a request line" % (what, value))
    return encoded


def _headers(pairs):
    out = []
    try:
        for name, value in pairs:
            name, value = str(name).encode("latin-1"), str(value).encode("latin-1")
            if not _TOKEN.fullmatch(name) or b"\r" in value or b"\n" in value or b"\x00" in value:
                raise ReplayError(400, "header %r is not valid" % name.decode("latin-1"))
            out.append((name, value.strip()))
    except (TypeError, ValueError, UnicodeEncodeError):
        raise ReplayError(400, "headers must be a list of [name, value] pairs in Latin-1") from None
    return out


def _body(edits, exchange, req, captured):
    if "body_base64" in edits:
        try:
            return base64.b64decode(str(edits["body_base64"]), validate=True)
        except ValueError:
            raise ReplayError(400, "body_base64 is not base64") from None
    if "body" in edits:
        return str(edits["body"]).encode("utf-8")
    head_length = len(b"".join(exchange.request)) - len(captured)
    if exchange.request_size > head_length + len(captured) or exchange.evicted:
        raise ReplayError(409, "the request's body was not kept whole; send the body with the replay")
    chunked = b"chunked" in (req.get(b"transfer-encoding") or b"").lower()
    return view.dechunk(captured) if chunked else captured


class Marked:
    """The capture as a replay's loop sees it: each exchange it begins is marked as a replay of
    `replay_of`, and remembered so the API can answer with it."""

    def __init__(self, capture, replay_of):
        self.capture, self.replay_of, self.begun = capture, replay_of, []

    def begin(self, req):
        exchange = self.capture.begin(req, self.replay_of)
        self.begun.append(exchange)
        return exchange

    def finish(self, exchange, status):
        self.capture.finish(exchange, status)


def replay(serve, request, timeout):
    """Send `request` through `serve(sock)` (the client's tunnel-socket loop on one end of a
    socket pair) and wait, within `timeout` seconds, for it to answer and finish."""
    ours, theirs = socket.socketpair()
    worker = gevent.spawn(serve, theirs)
    try:
        with gevent.Timeout(timeout, False):
            relay.send_all(ours, request)
            ours.shutdown(socket.SHUT_WR)   # one request: the loop ends after answering it
            while ours.recv(relay.BUFSIZE):
                pass    # read and let go: the capture keeps what it keeps
        worker.join(timeout=1)
    except OSError:
        pass    # the loop closed its end early; the capture says what happened
    finally:
        worker.kill()
        ours.close()
    if not worker.successful() and isinstance(worker.exception, HttpError):
        raise ReplayError(400, worker.exception.message)
