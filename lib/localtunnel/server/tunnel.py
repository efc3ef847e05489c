"""One tunnel: its own listener, the tunnel sockets the client opens to it, and their idle pool.

Corresponds to lib/TunnelAgent.js in localtunnel/server. Differences that matter (PROTOCOL.md B):
exactly `max_sockets` are accepted; idle sockets are watched so a stale one (bytes or EOF while
nobody uses it) is dropped, never handed to a visitor; waiters get an answer, never a hang.
"""
import hmac
import logging
import secrets
import socket
import ssl
import time
from collections import Counter, deque

import gevent
from gevent.event import AsyncResult, Event
from gevent.pool import Pool
from gevent.server import StreamServer

from ..transfer.relay import InputProbe, Reader
from ..wire import protocol

log = logging.getLogger(__name__)

#: TCP keepalive on tunnel sockets: a client that vanished without a FIN (laptop lid, NAT
#: timeout) is found within IDLE + INTERVAL * COUNT seconds, and its name is freed.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3
#: A client that closes a tunnel socket within this many seconds of a response, this many times,
#: closes after every response: the npm client does when the service closes its connection after
#: each response (many dev servers), and it breaks if a request reaches such a socket first.
CLOSE_AFTER_RESPONSE = 0.05
CLOSES_TO_LEARN = 3


_GONE = object()     # handed to waiters when the tunnel is removed


def visitor_share(sockets):
    """How many of a tunnel's `sockets` one visitor address may hold at once: all but a fifth
    (at least one), so a few connections that never finish cannot lock out everyone else."""
    return max(1, sockets - max(1, sockets // 5))


class NoSocket(Exception):
    """No tunnel socket came free within the wait bound."""


class TunnelGone(Exception):
    """The tunnel was removed while a visitor waited for it."""


class TunnelSocket:
    """A connection from the client, idle in the pool or checked out for one exchange."""

    __slots__ = ("sock", "reader", "closed", "holder", "released", "_watch", "_probe", "_tls")

    def __init__(self, sock):
        self.sock = sock
        self.reader = Reader(sock)
        # Over TLS (a socket through the public port) decrypted bytes can wait inside the TLS
        # object while the kernel holds none: those count as unread too.
        self._tls = isinstance(sock, ssl.SSLSocket)
        self.closed = Event()
        self.holder = None      # the visitor address it is checked out to (None: idle or exempt)
        self.released = None    # when its last response ended (time.monotonic())
        self._watch = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._probe = InputProbe(sock)

    def watch(self, on_input):
        """While idle, any readable event means bytes or EOF nobody asked for: the local
        service timed out or the client went away. `on_input(self)` runs on the hub, so it
        only flags; the socket's handler greenlet does the closing."""
        self._watch.start(on_input, self)

    def unwatch(self):
        self._watch.stop()

    def is_stale(self):
        """A last check at checkout, for bytes that arrived since the loop last polled."""
        return (self.closed.is_set() or bool(self.reader.buf) or self._probe.has_input()
                or (self._tls and self.sock.pending() > 0))

    def has_unread(self):
        """Whether a socket that just carried a response holds a byte nobody asked for. Its last
        recv, microseconds ago with no other greenlet run since, emptied the kernel's buffer
        unless it came back full; only then is the kernel asked again."""
        return (self.closed.is_set() or bool(self.reader.buf)
                or (not self.reader.drained and self._probe.has_input())
                or (self._tls and self.sock.pending() > 0))

    def close(self):
        self.closed.set()
        self._watch.stop()
        self._watch.close()
        self.sock.close()


class Tunnel:
    """A registered name with its port and sockets."""

    def __init__(self, tunnel_id, settings, client_addr, on_expire, deadlines):
        self.id = tunnel_id
        self._deadlines = deadlines
        self.client_addr = client_addr
        self.max_sockets = settings.max_sockets
        self._settings = settings
        self._on_expire = on_expire
        self._sockets = set()
        self._idle = []             # a stack: the most recently used socket is the least stale
        self._waiters = deque()     # (AsyncResult, visitor address) waiting, longest first
        self._held = Counter()      # visitor address -> sockets it holds now
        self._quick_closes = 0      # sockets the client closed right after a response
        #: Set once the client is seen closing sockets after each response: each socket is then
        #: closed by us after its response, before a request can race the client's close.
        self.retires_sockets = False
        self.gate = None            # who may visit (gate.Gate), checked before a socket is taken
        self._expiry = None
        self._removed = False
        #: Proves a socket through the public port is this tunnel's client's (the creator-only
        #: rule there, where the address cannot tell).
        self.secret = secrets.token_urlsafe(32)
        # With --tunnel-ports=off, sockets come only through the public port (adopt()).
        self._server = StreamServer((settings.address, 0), self._handle, spawn=Pool()) if settings.tunnel_ports else None

    @property
    def port(self):
        return self._server.server_port if self._server is not None else 0

    @property
    def connected_sockets(self):
        return len(self._sockets)

    def start(self):
        """Listen before the API answers, so the client's first connect never meets a refusal."""
        if self._server is not None:
            self._server.start()
            log.info("tunnel %s: listening on port %d for %s", self.id, self.port, self.client_addr)
        self._arm_expiry(self._settings.connect_grace)

    def _arm_expiry(self, seconds):
        if self._expiry is not None:
            self._expiry.kill(block=False)
        self._expiry = gevent.spawn_later(seconds, self._expire)

    def _expire(self):
        self._expiry = None
        if not self._sockets and not self._removed:
            log.info("tunnel %s: no tunnel socket for the grace period, removing", self.id)
            self._on_expire(self)

    def _handle(self, sock, addr):
        """Owns one tunnel socket from the tunnel's port for its whole life: gevent closes it
        when this returns."""
        if not self.has_room():
            log.debug("tunnel %s: refusing socket from %s (limit %d)", self.id, addr, self.max_sockets)
            return
        if (self._settings.check_client_address and self.client_addr
                and protocol.normal_address(addr[0]) != self.client_addr):
            # Anyone who guessed the port could otherwise answer this tunnel's visitors.
            log.warning("tunnel %s: refusing socket from %s: the tunnel belongs to %s",
                        self.id, addr[0], self.client_addr)
            return
        self.adopt(sock, addr)

    def has_room(self):
        return not self._removed and len(self._sockets) < self.max_sockets

    def admits(self, secret):
        """Whether `secret` (from a socket through the public port) is this tunnel's."""
        return secret is not None and hmac.compare_digest(secret.encode("latin-1"), self.secret.encode("ascii"))

    def adopt(self, sock, addr):
        """Serve `sock` as one of this tunnel's sockets until it closes; the caller has checked
        that it is the client's and that there is room. Blocks for the socket's whole life."""
        _tune(sock)
        ts = TunnelSocket(sock)
        self._sockets.add(ts)
        if self._expiry is not None:
            self._expiry.kill(block=False)
            self._expiry = None
        log.debug("tunnel %s: socket from %s (%d open)", self.id, addr, len(self._sockets))
        try:
            # A new socket has carried no response, so not release(): with retires_sockets set,
            # that would close every replacement the client opens.
            if ts.is_stale():
                ts.closed.set()     # bytes before any request: nothing a tunnel client sends
            else:
                self._offer(ts)
            ts.closed.wait()    # parked here until the socket is dropped; see TunnelSocket.watch
        finally:
            self._forget(ts)

    def _forget(self, ts):
        ts.close()
        self._sockets.discard(ts)
        if ts in self._idle:
            self._idle.remove(ts)
        log.debug("tunnel %s: socket closed (%d open)", self.id, len(self._sockets))
        if not self._sockets and not self._removed:
            self._arm_expiry(self._settings.grace)

    def _client_closed(self, ts):
        """The client closed (or wrote to) `ts` while it sat idle: seen on the hub."""
        self._learn_from_close(ts)
        ts.closed.set()

    def _learn_from_close(self, ts):
        """Count a close by the client within CLOSE_AFTER_RESPONSE of a response; past
        CLOSES_TO_LEARN of them, retire every socket after its response from then on. The npm
        client writes a request that reaches it just as its local connection closed into that
        connection, fails, and then never replaces the tunnel socket: the tunnel would bleed
        sockets until it died."""
        if self.retires_sockets or ts.released is None:
            return
        if time.monotonic() - ts.released < CLOSE_AFTER_RESPONSE:
            self._quick_closes += 1
            if self._quick_closes >= CLOSES_TO_LEARN:
                self.retires_sockets = True
                log.info("tunnel %s: its client closes tunnel sockets after each response; "
                         "closing each after its response from now on", self.id)

    def checkout(self, timeout, visitor=None):
        """An idle tunnel socket, exclusively the caller's until release() or drop().

        `visitor` (an address) may hold visitor_share() sockets at once; past that it queues
        like everyone else. Raises NoSocket after `timeout` seconds, TunnelGone at once if the
        tunnel is removed."""
        deadline = time.monotonic() + timeout
        if self._removed:
            raise TunnelGone()
        if self._may_take(visitor):
            ts = self._pop_idle()
            if ts is not None:
                self._hold(ts, visitor)
                return ts
        # Handed over straight from a finished exchange: no idle time for stale bytes.
        return self._wait_for_socket(deadline, visitor)

    def _may_take(self, visitor):
        return visitor is None or self._held[visitor] < visitor_share(len(self._sockets))

    def _pop_idle(self):
        """The freshest idle socket that is not stale, or None."""
        while self._idle:
            ts = self._idle.pop()
            ts.unwatch()
            if not ts.is_stale():
                return ts
            ts.closed.set()
        return None

    def _hold(self, ts, visitor):
        ts.holder = visitor
        if visitor is not None:
            self._held[visitor] += 1

    def _unhold(self, ts):
        visitor, ts.holder = ts.holder, None
        if visitor is not None:
            self._held[visitor] -= 1
            if not self._held[visitor]:
                del self._held[visitor]

    def _wait_for_socket(self, deadline, visitor):
        """Queue up for the next released socket. Handing sockets over in arrival order keeps a
        visitor that just finished from taking its socket straight back while others starve."""
        waiter = AsyncResult()
        entry = (waiter, visitor)
        self._waiters.append(entry)
        try:
            with self._deadlines.bound(max(0.0, deadline - time.monotonic()), NoSocket):
                waiter.wait()
        except NoSocket:
            if not waiter.ready():
                raise
            # else a socket was handed over just as time ran out: use it
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
        if waiter.value is _GONE:
            raise TunnelGone()
        return waiter.value

    def _hand_over(self, ts):
        """Give `ts` to the longest-waiting visitor still under its share; False if none is."""
        for entry in self._waiters:
            waiter, visitor = entry
            if not waiter.ready() and self._may_take(visitor):
                self._waiters.remove(entry)
                self._hold(ts, visitor)
                waiter.set(ts)
                return True
        return False

    def release(self, ts):
        """Return a socket whose last exchange ended cleanly on a message boundary.

        It is checked before anyone gets it: a byte that arrived after the response (an origin
        that sent more than it declared) would otherwise be read as the next visitor's answer."""
        self._unhold(ts)
        ts.released = time.monotonic()
        if self._removed or ts.has_unread():
            self.drop(ts, died=not self._removed)
        elif self.retires_sockets:
            self.drop(ts)   # see _learn_from_close
        else:
            self._offer(ts)

    def drop(self, ts, died=False):
        """Give up a socket whose state is unknown (cut-off or close-delimited exchange), or
        that `died` under us: the client closed it."""
        if died:
            self._learn_from_close(ts)
        self._unhold(ts)
        ts.closed.set()
        # Its holder may be back under its share, with idle sockets it could not take before.
        while self._waiters and self._idle:
            idle = self._pop_idle()
            if idle is None or not self._offer(idle):
                return

    def _offer(self, ts):
        """Hand `ts` to a waiting visitor (True), or park it in the idle pool, watched."""
        if self._hand_over(ts):
            return True
        ts.watch(self._client_closed)
        self._idle.append(ts)
        return False

    def remove(self):
        """Stop listening, close every socket and answer every waiter."""
        if self._removed:
            return
        self._removed = True
        if self._expiry is not None:
            self._expiry.kill(block=False)
        while self._waiters:
            self._waiters.popleft()[0].set(_GONE)
        if self._server is not None:
            self._server.close()
        for ts in list(self._sockets):
            ts.closed.set()
        log.info("tunnel %s: removed", self.id)


def _tune(sock):
    """TCP keepalive finds dead clients; NODELAY sends a small request head at once instead of
    holding it for an ACK (Nagle), which showed up in the latency tail."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
