"""The public port's listening socket: opened alone, or shared by the processes of one cluster
(SO_REUSEPORT), and the one-line advice when it cannot be opened.
"""
import socket


class BindError(Exception):
    """The public port could not be opened; the message says how to fix it."""


def bind_advice(settings, exc):
    where = "%s:%d" % (settings.address, settings.port)
    if exc.errno == 13:
        why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == 98:
        why = "the port is already in use"
    else:
        why = exc.strerror or str(exc)
    return "cannot listen on %s: %s; choose another with --port (or LT_PORT)" % (where, why)


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
