"""One HTTP request forwarded over one connection, and its response relayed back. Shared by the
server (visitor -> tunnel socket) and the client (tunnel socket -> local service).

The request body streams in a greenlet while the response is read, so `100 Continue` and early
answers work. Afterwards the caller learns whether both connections still sit on a message
boundary (`in_sync`) and may carry another request.
"""
import socket

import gevent

from ..wire.framing import response_framer
from ..wire.http11 import HttpError, closing_response_head, parse_response_head
from . import relay


class DestinationDied(Exception):
    """The destination closed or broke before a response head arrived."""


class BadResponse(Exception):
    """The destination answered with something that is not HTTP; nothing was relayed."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class ResponseTimeout(Exception):
    """No response head within the bound."""


class _Stalled(Exception):
    """A body stopped moving for longer than the response bound: the peer is gone or stuck."""


#: What a visitor is answered when forward() fails before any response byte went out, the same
#: table for both ends: the status, and the X-Localtunnel-Status code on the server (the tunnel
#: failed) and on the client (the local service failed). Each end words its own message.
FAILURES = {
    DestinationDied: (502, "tunnel-closed", "local-closed"),
    BadResponse: (502, "bad-response", "local-bad-response"),
    ResponseTimeout: (504, "response-timeout", "local-timeout"),
}


#: Methods whose request body origins commonly never read (no semantics in RFC 9110). An origin
#: that leaves a body unread reads it as the next request, and answers it to the next visitor.
_BODY_OFTEN_IGNORED = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"DELETE", b"CONNECT"))


class Limits:
    """The bounds forward() keeps. Each end builds one once: the server from its settings, the
    client from its own constants. `deadlines` (a deadlines.Deadlines) enforces the timeouts."""

    __slots__ = ("head_limit", "response_timeout", "body_settle", "splice_idle_timeout", "deadlines")

    def __init__(self, head_limit, response_timeout, body_settle, splice_idle_timeout, deadlines):
        self.head_limit = head_limit                # bytes of a response head (502 past it)
        self.response_timeout = response_timeout    # seconds to the response head, and of any pause mid-body
        self.body_settle = body_settle              # seconds a request body may trail its response
        self.splice_idle_timeout = splice_idle_timeout  # seconds an upgraded connection may be silent (None: ever)
        self.deadlines = deadlines

    def stall(self):
        """What copy_body enters around each read and send that may wait: a peer that goes silent
        in the middle of a body would otherwise hold the other side, and a tunnel socket, for ever."""
        return self.deadlines.bound(self.response_timeout, _Stalled)


class Outcome:
    __slots__ = ("response", "in_sync", "keep_alive", "dst_reusable", "bytes_in", "bytes_out", "waited")

    def __init__(self, response, in_sync, bytes_in=0, bytes_out=0):
        self.response = response
        self.in_sync = in_sync      # both sides are at a message boundary
        self.keep_alive = False     # the response lets its connection carry another request
        self.dst_reusable = False   # dst may carry another request: nothing unread on it
        self.bytes_in = bytes_in    # request bytes sent to dst, head included
        self.bytes_out = bytes_out  # response bytes sent to src, heads included
        self.waited = 0.0           # seconds the caller waited for dst (set by the caller)


def forward(src, dst, req, head, body_framer, limits, close_src=False):
    """Send `head` and the request body from Reader `src` to Reader `dst`; relay the response.

    `limits` (a Limits) bounds the wait for the response head, and every pause inside a body, by
    its response_timeout. With `close_src` the caller will
    close `src` after this response, and the response head tells it so. Raises DestinationDied,
    BadResponse, ResponseTimeout, or the HttpError of a malformed request body, before any
    response byte reached `src`; a failure after that is an OSError or an incomplete Outcome."""
    carries_body = not body_framer.done
    body, sent = _send_request(src, dst, head, body_framer, limits.stall)
    interim = 0
    try:
        resp, raw = _first_response_head(dst, limits, body)
        while 100 <= resp.status < 200 and resp.status != 101:
            relay.send_all(src.sock, raw)   # 100 Continue and friends pass through
            interim += len(raw)
            resp, raw = _read_response_head(dst, limits)
        if resp.status == 101:
            if not req.is_upgrade:
                # What follows is another protocol, which the next visitor would read as HTTP.
                raise BadResponse("a 101 Switching Protocols to a request that asked for no upgrade")
            return _upgrade(src, dst, resp, raw, body, limits.splice_idle_timeout)
        if close_src and resp.keep_alive:
            raw = closing_response_head(raw)
        outcome = _relay_response(src, dst, req, resp, raw, body, limits, carries_body)
        outcome.bytes_in += sent
        outcome.bytes_out += interim
        return outcome
    finally:
        if body is not None:
            body.kill()


def _first_response_head(dst, limits, body):
    """The response head; if the destination hung up because the request body was malformed,
    that body's HttpError (a 400 for the visitor, not a 502 about the tunnel)."""
    try:
        return _read_response_head(dst, limits)
    except DestinationDied:
        if body is not None and body.ready() and body.value[2] is not None:
            raise body.value[2] from None
        raise


def _send_request(src, dst, head, framer, stall):
    """Send the head with as much body as is already read; stream the rest in a greenlet.
    Returns (that greenlet or None, bytes sent so far)."""
    out = head
    if src.buf and not framer.done:
        used = framer.feed(src.buf)
        out, src.buf = out + src.buf[:used], src.buf[used:]
    try:
        relay.send_all(dst.sock, out)
    except OSError as exc:
        raise DestinationDied() from exc
    if framer.done:
        return None, len(out)
    if not src.buf:
        relay.acknowledge_now(src.sock)     # a head alone: see _relay_response
    return gevent.spawn(_copy_request_body, src, framer, dst.sock, stall), len(out)


def _copy_request_body(src, framer, sock, stall):
    """Returns (complete, bytes sent, the HttpError of a malformed body or None). A side that
    breaks or stalls mid-body is an ordinary event here: the response side sees the result and
    closes what is out of sync."""
    try:
        complete, sent = relay.copy_body(src, framer, sock, bound=stall)
    except HttpError as exc:
        # A bad chunk size: the destination waits for a body that will never make sense. Cut it
        # off, so the response side stops waiting at once instead of at its timeout.
        relay.shutdown_quietly(sock, socket.SHUT_RDWR)
        return False, 0, exc
    except (OSError, relay.Closed, _Stalled):
        complete, sent = False, 0
    if not complete:
        # The sender left or stalled mid-body: the destination would wait for the rest until
        # --response-timeout, holding a tunnel socket that ten such visitors could exhaust.
        relay.shutdown_quietly(sock, socket.SHUT_RDWR)
    return complete, sent, None


def _read_response_head(dst, limits):
    try:
        with limits.deadlines.bound(limits.response_timeout, ResponseTimeout):
            raw = dst.read_head(limits.head_limit)
    except (OSError, relay.Closed) as exc:
        raise DestinationDied() from exc
    except HttpError as exc:
        raise BadResponse(exc.message) from None
    if raw is None:
        raise DestinationDied()
    try:
        return parse_response_head(raw), raw
    except HttpError as exc:
        raise BadResponse(exc.message) from None


def _relay_response(src, dst, req, resp, raw, body, limits, carries_body):
    try:
        framer = response_framer(req.method, resp)
    except HttpError as exc:
        raise BadResponse(exc.message) from None
    if not framer.done and not dst.buf:
        # The head came alone and we are about to wait for the body. A sender with Nagle on
        # (the npm client) holds the body until the head is acknowledged, and our kernel delays
        # that ACK by 40 ms on a request/response connection: ask for it now.
        relay.acknowledge_now(dst.sock)
    try:
        complete, sent = relay.copy_body(dst, framer, src.sock, prefix=raw, bound=limits.stall)
    except (HttpError, _Stalled):
        # Broken chunking, or silence, after the head went out: the caller closes both sides.
        complete, sent = False, len(raw)
    body_done = body is None or _finished(body, limits.body_settle)
    streamed = body.value[1] if body_done and body is not None else 0
    in_sync = complete and body_done and not framer.until_close
    outcome = Outcome(resp, in_sync, bytes_in=streamed, bytes_out=sent)
    outcome.keep_alive = resp.keep_alive
    # Bytes already read past the response are not for the next visitor, nor is a connection
    # whose destination may have left the request body unread: retire dst.
    outcome.dst_reusable = (in_sync and outcome.keep_alive and not dst.buf
                            and not (carries_body and _body_maybe_unread(req, resp)))
    return outcome


def _body_maybe_unread(req, resp):
    """Whether the destination may have answered a request with a body without reading it,
    leaving it to be read as a request of its own. Python's http.server does this for a GET with a
    body and for any method it refuses; nothing on the wire says so, so dst is not reused."""
    return req.method in _BODY_OFTEN_IGNORED or resp.status >= 400


def _upgrade(src, dst, resp, raw, body, idle):
    """101 Switching Protocols: from here on the two connections are one raw pipe, closed after
    `idle` seconds without a byte either way (None: never)."""
    relay.send_all(src.sock, raw)
    if body is not None:
        body.join()
    relay.splice(src, dst, idle)
    return Outcome(resp, False, bytes_out=len(raw))   # spliced to its end: neither side reusable


def _finished(greenlet, settle):
    """Whether the request body went through whole. The service usually answers after reading
    all of it, so the copier is at most a moment behind; a response that came before the body
    was read leaves the connection in an unknown state, so it is not reused."""
    greenlet.join(timeout=settle)
    return greenlet.ready() and greenlet.value[0] is True
