"""One visitor request through a tunnel: which socket, what if it fails (PROTOCOL.md B1, B4).

The Node server pipes a visitor connection into a tunnel socket for the connection's life
(lib/TunnelAgent.js + the http.Agent in server.js). We borrow a tunnel socket per request and
return it after a complete response, so ten sockets serve any number of keep-alive visitors.
Every failure ends in an answer for the visitor: 502, 504, or a closed connection once part of
a response has gone out.
"""
import logging
import time

from ..transfer.forward import (
    FAILURES,
    BadResponse,
    DestinationDied,
    ResponseTimeout,
    forward,
)
from ..wire.http11 import IDEMPOTENT_METHODS, HttpError
from .tunnel import NoSocket, TunnelGone

log = logging.getLogger(__name__)

#: What each failure of forward() tells the visitor, beside its status and code (forward.FAILURES).
_FAILURE_MESSAGES = {
    DestinationDied: (
        "The client of tunnel {id} closed its connection before answering.\n"
        "The local service may have crashed or closed the connection; the tunnel owner should "
        "check it and the localtunnel client."),
    BadResponse: (
        "The client of tunnel {id} sent an answer that is not valid HTTP ({why}).\n"
        "The tunnel owner should check that --port points at an HTTP service."),
    ResponseTimeout: (
        "The service behind tunnel {id} did not answer within {seconds:g} s.\n"
        "The tunnel owner should check the local service."),
}


def send_through_tunnel(tunnel, visitor, req, head, body_framer, settings, limits, address=None):
    """Send one request through `tunnel` and its response to the visitor, whose `address` counts
    against its share of the tunnel's sockets. Returns (whether the visitor connection may carry
    another request, the forward.Outcome); raises HttpError for an error page instead."""
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
        except DestinationDied as exc:
            tunnel.drop(ts, died=True)
            if not retries or time.monotonic() >= deadline:
                raise _failure(tunnel, settings, exc) from None
            retries -= 1
            log.debug("tunnel %s: socket died before answering, sending again", tunnel.id)
            continue
        except (BadResponse, ResponseTimeout) as exc:
            tunnel.drop(ts)
            raise _failure(tunnel, settings, exc) from None
        except BaseException:
            tunnel.drop(ts)     # state unknown: never hand it to another visitor
            raise
        (tunnel.release if outcome.dst_reusable else tunnel.drop)(ts)
        outcome.waited = waited
        return outcome.in_sync and outcome.keep_alive and keep_alive, outcome


def _checkout(tunnel, settings, address, wait):
    try:
        return tunnel.checkout(wait, address)
    except NoSocket:
        raise HttpError(504, (
            "Tunnel %s is connected, but none of its connections came free within %g s.\n"
            "Try again in a moment. If this persists, the tunnel owner should check that the "
            "local service answers requests promptly." % (tunnel.id, settings.socket_wait)
        ), "no-free-socket") from None
    except TunnelGone:
        raise HttpError(502, (
            "Tunnel %s closed while this request waited for it.\n"
            "The tunnel owner should restart their localtunnel client." % tunnel.id
        ), "tunnel-closed") from None


def _failure(tunnel, settings, exc):
    """The HttpError for a visitor when forward() failed with `exc` (see forward.FAILURES)."""
    status, code, _ = FAILURES[type(exc)]
    message = _FAILURE_MESSAGES[type(exc)].format(
        id=tunnel.id, why=getattr(exc, "message", ""), seconds=settings.response_timeout)
    return HttpError(status, message, code)
