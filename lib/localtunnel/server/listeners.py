"""The public port's listening socket: opened alone, or shared by the processes of one cluster
(SO_REUSEPORT), and the one-line advice when it cannot be opened.
"""
import errno
import socket

#: Ports --node-port may take, from it on: one per gunicorn worker on the machine.
NODE_PORTS = 64


class BindError(Exception):
    """The public port could not be opened; the message says how to fix it."""


def bind_advice(settings, exc, port=None, flag="--port (or LT_PORT)"):
    """One line: which port could not be opened, why, and the flag that picks another."""
    where = "%s:%d" % (settings.address, settings.port if port is None else port)
    if exc.errno == 13:
        why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == 98:
        why = "the port is already in use"
    else:
        why = exc.strerror or str(exc)
    return "cannot listen on %s: %s; choose another with %s" % (where, why, flag)


def shared_listener(settings):
    """The public port, bound so that several processes may listen on it together (each a node
    of one cluster); the kernel spreads new connections over them."""
    family = socket.AF_INET6 if ":" in settings.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.address, settings.port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def internal_listener(settings):
    """The port other nodes hand visitors over to: any free one, or with --node-port the first
    free of NODE_PORTS from it (each gunicorn worker takes the next), so a firewall can allow
    exactly that range between nodes."""
    if not settings.node_port:
        return _listening((settings.address, 0))
    last = min(settings.node_port + NODE_PORTS - 1, 65535)
    for port in range(settings.node_port, last + 1):
        try:
            return _listening((settings.address, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "--node-port %d..%d are all in use" % (settings.node_port, last))


def _listening(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock
