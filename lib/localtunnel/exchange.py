"""One visitor request through one tunnel socket, and its response back (PROTOCOL.md B1, B4).

The Node server pipes a visitor connection into a tunnel socket for the connection's life
(lib/TunnelAgent.js + the http.Agent in server.js). We borrow a tunnel socket per request and
return it after a complete response, so ten sockets serve any number of keep-alive visitors.
Every way this can fail ends in an answer for the visitor: 502, 504, or a closed connection
once part of a response has gone out.
"""
import logging

import gevent

from . import relay
from .http11 import HttpError, parse_response_head, response_framer
from .tunnel import NoSocket, TunnelGone

log = logging.getLogger(__name__)

#: Safe to send twice: if a tunnel socket dies before answering one of these (and it had no
#: body), it is retried once on another socket instead of failing the visitor.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class Failed(Exception):
    """The exchange failed before any response byte reached the visitor: answer with this."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _TunnelDied(Exception):
    """The tunnel socket closed or broke before a response head arrived."""


class Exchange:
    """The state of one request: the visitor side, the request, and the tunnel it goes to."""

    def __init__(self, tunnel, visitor, req, head, body_framer, settings):
        self.tunnel, self.visitor, self.req = tunnel, visitor, req
        self.head, self.body_framer, self.settings = head, body_framer, settings
        self.keep_visitor = False

    def run(self):
        """Proxy the request. Returns whether the visitor connection may carry another one.
        Raises Failed when the visitor should get an error page instead."""
        retry = self.req.method in IDEMPOTENT and self.body_framer.done
        while True:
            ts = self._checkout()
            try:
                return self._through(ts)
            except _TunnelDied:
                self.tunnel.drop(ts)
                if not retry:
                    raise Failed(502, "tunnel-closed", _died_message(self.tunnel.id)) from None
                retry = False
                log.debug("tunnel %s: socket died before answering, retrying once", self.tunnel.id)
            except BaseException:
                self.tunnel.drop(ts)    # state unknown: never hand it to another visitor
                raise

    def _checkout(self):
        try:
            return self.tunnel.checkout(self.settings.socket_wait)
        except NoSocket:
            raise Failed(504, "no-free-socket", (
                "Tunnel %s is connected, but none of its connections came free within %g s.\n"
                "Try again in a moment. If this persists, the tunnel owner should check that the "
                "local service answers requests promptly." % (self.tunnel.id, self.settings.socket_wait)
            )) from None
        except TunnelGone:
            raise Failed(502, "tunnel-closed", (
                "Tunnel %s closed while this request waited for it.\n"
                "The tunnel owner should restart their localtunnel client." % self.tunnel.id
            )) from None

    def _through(self, ts):
        body = self._send_request(ts)
        try:
            resp, raw = self._read_response_head(ts)
            while 100 <= resp.status < 200 and resp.status != 101:
                self.visitor.sock.sendall(raw)      # 100 Continue and friends pass through
                resp, raw = self._read_response_head(ts)
            if resp.status == 101 and self.req.is_upgrade:
                return self._upgrade(ts, raw, body)
            return self._respond(ts, resp, raw, body)
        finally:
            if body is not None:
                body.kill()

    def _send_request(self, ts):
        """Send the head and as much of the body as is already here; a longer body keeps
        flowing in a greenlet, so a response (or 100 Continue) can come back meanwhile."""
        out = self.head
        buffered = self.visitor.buf
        if buffered and not self.body_framer.done:
            used = self.body_framer.feed(buffered)
            out, self.visitor.buf = out + buffered[:used], buffered[used:]
        try:
            ts.sock.sendall(out)
        except OSError as exc:
            raise _TunnelDied() from exc
        if self.body_framer.done:
            return None
        return gevent.spawn(_copy_request_body, self.visitor, self.body_framer, ts.sock)

    def _read_response_head(self, ts):
        try:
            with gevent.Timeout(self.settings.response_timeout, _ResponseTimeout):
                raw = ts.reader.read_head(self.settings.head_limit)
        except _ResponseTimeout:
            raise Failed(504, "response-timeout", (
                "The service behind tunnel %s did not answer within %g s.\n"
                "The tunnel owner should check the local service." % (self.tunnel.id, self.settings.response_timeout)
            )) from None
        except (OSError, relay.Closed) as exc:
            raise _TunnelDied() from exc
        except HttpError as exc:    # an oversized head: the tunnel's fault, not the visitor's
            raise Failed(502, "bad-response", _bad_response_message(self.tunnel.id, exc)) from None
        if raw is None:
            raise _TunnelDied()
        try:
            return parse_response_head(raw), raw
        except HttpError as exc:
            raise Failed(502, "bad-response", _bad_response_message(self.tunnel.id, exc)) from None

    def _respond(self, ts, resp, raw, body):
        try:
            framer = response_framer(self.req.method, resp)
        except HttpError as exc:
            raise Failed(502, "bad-response", _bad_response_message(self.tunnel.id, exc)) from None
        try:
            complete = relay.copy_body(ts.reader, framer, self.visitor.sock, prefix=raw)
        except HttpError:
            complete = False    # broken chunking after the head went out: closing is all we can do
        body_done = body is None or _finished(body, self.settings.body_settle)
        if complete and body_done and not framer.until_close and resp.keep_alive:
            self.tunnel.release(ts)
        else:
            self.tunnel.drop(ts)
        return complete and body_done and not framer.until_close and self.req.keep_alive and resp.keep_alive

    def _upgrade(self, ts, raw, body):
        """101 Switching Protocols: from here on the two sockets are one raw pipe."""
        self.visitor.sock.sendall(raw)
        if body is not None:
            body.join()
        try:
            relay.splice(self.visitor, ts.reader)
        finally:
            self.tunnel.drop(ts)
        return False


class _ResponseTimeout(Exception):
    pass


def _copy_request_body(visitor, framer, sock):
    """The request body's greenlet. A visitor or tunnel socket that breaks mid-body is an
    ordinary event here; the response side sees the result and drops the tunnel socket."""
    try:
        return relay.copy_body(visitor, framer, sock)
    except (OSError, relay.Closed, HttpError):
        return False


def _finished(greenlet, settle):
    """Whether the request body went through whole. The service usually answers after reading
    all of it, so the copier is at most a moment behind; a response that came before the body
    was read leaves the tunnel socket in an unknown state, so it is not reused."""
    greenlet.join(timeout=settle)
    return greenlet.ready() and greenlet.value is True


def _bad_response_message(tunnel_id, exc):
    return (
        "The client of tunnel %s sent an answer that is not valid HTTP (%s).\n"
        "The tunnel owner should check that --port points at an HTTP service." % (tunnel_id, exc.message)
    )


def _died_message(tunnel_id):
    return (
        "The client of tunnel %s closed its connection before answering.\n"
        "The local service may have crashed or closed the connection; the tunnel owner should "
        "check it and the localtunnel client." % tunnel_id
    )
