"""One visitor request through a tunnel: which socket, what if it fails (PROTOCOL.md B1, B4).

The Node server pipes a visitor connection into a tunnel socket for the connection's life
(lib/TunnelAgent.js + the http.Agent in server.js). We borrow a tunnel socket per request and
return it after a complete response, so ten sockets serve any number of keep-alive visitors.
Every failure ends in an answer for the visitor: 502, 504, or a closed connection once part of
a response has gone out.
"""
import logging
import time

from .forward import BadResponse, DestinationDied, ResponseTimeout, forward
from .http11 import IDEMPOTENT_METHODS
from .tunnel import NoSocket, TunnelGone

log = logging.getLogger(__name__)

class Failed(Exception):
    """The exchange failed before any response byte reached the visitor: answer with this."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def proxy_request(tunnel, visitor, req, head, body_framer, settings, limits, address=None):
    """Send one request through `tunnel` and its response to the visitor, whose `address` counts
    against its share of the tunnel's sockets. Returns (whether the visitor connection may carry
    another request, the forward.Outcome); raises Failed for an error page instead."""
    # If a tunnel socket dies before answering an idempotent request without a body, the request
    # goes again on another socket, while --socket-wait allows and at most once per tunnel
    # socket. Sockets die in clusters: the npm client ends its tunnel socket whenever its local
    # connection ends, so an origin that closes after each response leaves several dying at once.
    retries = tunnel.max_sockets if req.method in IDEMPOTENT_METHODS and body_framer.done else 0
    keep_alive = req.keep_alive
    waited = 0.0
    deadline = time.monotonic() + settings.socket_wait
    while True:
        started = time.monotonic()
        ts = _checkout(tunnel, settings, address, max(0.0, deadline - started))
        waited += time.monotonic() - started
        try:
            outcome = forward(visitor, ts.reader, req, head, body_framer, limits,
                              close_src=not keep_alive)
        except DestinationDied:
            tunnel.drop(ts, died=True)
            if not retries or time.monotonic() >= deadline:
                raise Failed(502, "tunnel-closed", _died_message(tunnel.id)) from None
            retries -= 1
            log.debug("tunnel %s: socket died before answering, sending again", tunnel.id)
            continue
        except BaseException as exc:
            tunnel.drop(ts)     # state unknown: never hand it to another visitor
            _raise_as_failed(tunnel, settings, exc)
            raise
        (tunnel.release if outcome.dst_reusable else tunnel.drop)(ts)
        outcome.waited = waited
        return outcome.in_sync and outcome.keep_alive and keep_alive, outcome


def _checkout(tunnel, settings, address, wait):
    try:
        return tunnel.checkout(wait, address)
    except NoSocket:
        raise Failed(504, "no-free-socket", (
            "Tunnel %s is connected, but none of its connections came free within %g s.\n"
            "Try again in a moment. If this persists, the tunnel owner should check that the "
            "local service answers requests promptly." % (tunnel.id, settings.socket_wait)
        )) from None
    except TunnelGone:
        raise Failed(502, "tunnel-closed", (
            "Tunnel %s closed while this request waited for it.\n"
            "The tunnel owner should restart their localtunnel client." % tunnel.id
        )) from None


def _raise_as_failed(tunnel, settings, exc):
    if isinstance(exc, ResponseTimeout):
        raise Failed(504, "response-timeout", (
            "The service behind tunnel %s did not answer within %g s.\n"
            "The tunnel owner should check the local service." % (tunnel.id, settings.response_timeout)
        )) from None
    if isinstance(exc, BadResponse):
        raise Failed(502, "bad-response", (
            "The client of tunnel %s sent an answer that is not valid HTTP (%s).\n"
            "The tunnel owner should check that --port points at an HTTP service." % (tunnel.id, exc.message)
        )) from None


def _died_message(tunnel_id):
    return (
        "The client of tunnel %s closed its connection before answering.\n"
        "The local service may have crashed or closed the connection; the tunnel owner should "
        "check it and the localtunnel client." % tunnel_id
    )
