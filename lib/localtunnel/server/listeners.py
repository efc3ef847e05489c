"""The ports a front listens on: the public one (alone, or shared by the processes of one cluster
with SO_REUSEPORT), in a cluster an internal one of this process's own, and with TLS a plain-HTTP
redirect port; and the one-line advice when one cannot be opened.
"""
import errno

from gevent.pool import Pool

from ..transfer import relay
from .descriptors import Acceptor

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
    return relay.listen((settings.address, settings.port), reuse_port=True)


def internal_listener(settings):
    """The port other nodes hand visitors over to: any free one, or with --node-port the first
    free of NODE_PORTS from it (each gunicorn worker takes the next), so a firewall can allow
    exactly that range between nodes."""
    if not settings.node_port:
        return relay.listen((settings.address, 0))
    try:
        return relay.listen_first_free(settings.address, settings.node_port, NODE_PORTS)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        last = min(settings.node_port + NODE_PORTS - 1, 65535)
        raise OSError(errno.EADDRINUSE, "--node-port %d..%d are all in use" % (settings.node_port, last)) from None


class Ports:
    """The front's listeners, each serving its connections with the handler given for it."""

    def __init__(self, settings, clustered, public, internal, redirect):
        self.settings, self.clustered = settings, clustered
        self._handlers = (public, internal, redirect)
        # An unbounded Pool, so stop() can end every visitor's greenlet. Not a bounded one: a full
        # pool stops accepting, and visitors would wait in the kernel's backlog with no answer.
        # Past --max-visitors each one gets a 503 at once instead (front.py).
        self.public = Acceptor((settings.address, settings.port), public, spawn=Pool())
        self.internal = self.redirect = None    # opened in start(), where a bind error becomes advice

    @property
    def port(self):
        return self.public.server_port

    @property
    def internal_port(self):
        return self.internal.server_port if self.internal else self.port

    def start(self):
        """Listen on every port, or raise BindError (having closed what was open)."""
        settings = self.settings
        try:
            if self.clustered:
                self.public = Acceptor(shared_listener(settings), self._handlers[0], spawn=Pool())
            self.public.start()
        except OSError as exc:
            raise BindError(bind_advice(settings, exc)) from None
        if self.clustered:
            # Other nodes hand visitors over to a port of this process's own: the public one
            # may be shared by several processes (gunicorn -w N).
            try:
                self.internal = Acceptor(internal_listener(settings), self._handlers[1], spawn=Pool())
            except OSError as exc:
                self.stop()
                raise BindError("cannot open the internal port for other nodes on %s: %s; choose another "
                                "--node-port (or LT_NODE_PORT)" % (settings.address, exc.strerror or exc)) from None
            self.internal.start()
        if settings.http_redirect_port:
            try:
                self.redirect = Acceptor((settings.address, settings.http_redirect_port), self._handlers[2],
                                         spawn=Pool())
                self.redirect.start()
            except OSError as exc:
                self.redirect = None
                self.stop()
                raise BindError(bind_advice(settings, exc, settings.http_redirect_port,
                                            "--http-redirect-port (or LT_HTTP_REDIRECT_PORT)")) from None

    def stop(self, timeout=1):
        for server in (self.public, self.internal, self.redirect):
            if server is not None:
                server.stop(timeout=timeout)
