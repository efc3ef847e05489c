"""Tunnel sockets through the public port (issue 16): a client that cannot reach a tunnel's own
port (firewalls, clouds, --tunnel-ports=off) upgrades a connection to the public port instead,
proven the tunnel's by its secret. See wire/protocol.py for the exchange.
"""
import logging

from ..wire import protocol
from ..wire.http11 import HttpError

log = logging.getLogger(__name__)

PATH = protocol.SOCKET_PATH.encode()
_PROTOCOL = protocol.SOCKET_PROTOCOL.encode()
_SECRET_HEADER = protocol.SOCKET_SECRET_HEADER.lower().encode()


def tunnel_id_of(req):
    """The tunnel a socket upgrade is for, from its path."""
    return req.target[len(PATH):].decode("latin-1")


def adopt(registry, visitor, req, ip, send):
    """Make visitor connection `visitor` (its upgrade request `req` read) one of its tunnel's
    sockets: the secret proves it is the tunnel's client (creator-only, by secret rather than
    address), within the tunnel's socket limit. `send(sock, bytes)` sends the 101. Then it
    serves the tunnel from this greenlet for its whole life, exactly like a socket on the
    tunnel's own port. Raises HttpError for a refusal."""
    if (req.get(b"upgrade") or b"").lower() != _PROTOCOL:
        raise HttpError(400, "a tunnel socket upgrades to %s" % protocol.SOCKET_PROTOCOL)
    tunnel_id = tunnel_id_of(req)
    tunnel = registry.get(tunnel_id)
    if tunnel is None:
        raise HttpError(404, "There is no tunnel named %s on this server." % tunnel_id, "no-such-tunnel")
    secret = req.get(_SECRET_HEADER)
    if not tunnel.admits(secret.decode("latin-1") if secret is not None else None):
        log.warning("tunnel %s: refusing a socket through the public port from %s: wrong secret", tunnel_id, ip)
        raise HttpError(403, "That is not the secret of tunnel %s." % tunnel_id, "bad-socket-secret")
    if not tunnel.has_room():
        raise HttpError(429, "Tunnel %s already has its %d sockets." % (tunnel_id, tunnel.max_sockets), "socket-limit")
    if visitor.buf:
        raise HttpError(400, "bytes came after the upgrade request before its answer")
    send(visitor.sock, protocol.SOCKET_UPGRADED)
    tunnel.adopt(visitor.sock, (ip, 0))
