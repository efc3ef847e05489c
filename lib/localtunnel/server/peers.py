"""The other nodes of a cluster, as the front sees them: who holds a tunnel, and getting a visitor
to that node over one internal hop (issue 14).

Both ways of doing it go to the owner's own internal port (its public one may be shared by
several workers), so the owner applies every limit and answers every error page itself, exactly
as for a visitor of its own:
- hand_over(): the visitor's whole connection, introduced by a PROXY line naming the visitor and
  then spliced. The visitor's first request is routed here; every later one is parsed only by
  the owner, so the hop costs this node a splice, not a second HTTP proxy (bench/cluster.py).
- pass_on(): one request over a kept-alive HTTP/1.1 connection, the visitor's address in
  X-Forwarded-For: for a request that ends its visitor's connection (a new connection per
  visitor would cost more than the splice saves), and for one that reached this node by a
  hand-over and finds its tunnel on a third node (it goes no further).
The owner believes a PROXY line and X-Forwarded-For from live nodes only.

Between nodes of one machine hand_over() passes the visitor's socket itself instead (passing.py):
this node is then done with the connection. Not for a `Connection: close` request: the owner
would still set up and tear down a connection of its own for it, which cost the two nodes more
than passing the request on (bench/cluster.py: 171 us of server CPU against 162).
"""
import socket
import time

from gevent.event import AsyncResult

from ..transfer import relay
from ..transfer.forward import FAILURES, BadResponse, DestinationDied, ResponseTimeout, forward
from ..wire.http11 import IDEMPOTENT_METHODS, HttpError, raw_request_head
from ..wire.proxy_line import proxy_line
from .cluster import RegistryUnreachable
from .passing import Passer

#: How long a name's owner (or its absence) is remembered: a request normally costs no Redis round
#: trip, and a tunnel that moved or ended is noticed within half a lease.
OWNER_CACHE_SHARE = 0.5
#: Seconds a name no node holds is remembered as such: a tunnel just created elsewhere must not
#: stay invisible here for long.
NO_OWNER_CACHE = 1.0
#: Names remembered at most: random names from visitors must not grow the cache for ever.
OWNER_CACHE_SIZE = 4096
#: Seconds between two lookups of the live nodes caused by an unknown address handing over a visitor.
NODES_RECHECK = 1.0
#: Idle connections kept to each other node: enough for the requests one node has in flight at
#: once, or every burst opens (and the owner accepts) new ones. 32 cost the owner 80 us of CPU per
#: passed-on request against 72 with 256 (bench/cluster.py).
IDLE_PER_NODE = 256


_ASK_AGAIN = object()
#: What the owner node did, by forward()'s failure; the status comes from forward.FAILURES.
_FAILED_HOW = {
    DestinationDied: "closed the connection without answering",
    BadResponse: "answered with something that is not HTTP ({why})",
    ResponseTimeout: "did not answer within {seconds:g} s",
}


class Peers:
    def __init__(self, names, settings, limits):
        self._names, self._settings, self._limits = names, settings, limits
        self._owners = {}           # name -> (expires, Node or None)
        self._asking = {}           # name -> AsyncResult of the lookup in flight
        self._idle = {}             # (host, port) -> [(Reader, InputProbe)]
        self.hosts = frozenset()    # live nodes' hosts, refreshed on each renewal tick
        self._refreshed = float("-inf")
        self._passer = Passer(limits.deadlines, settings.head_timeout) if settings.pass_sockets else None

    def refresh(self):
        """On each renewal tick: which hosts are nodes (trusted to say who a visitor is)."""
        self._refreshed = time.monotonic()
        self.hosts = self._names.node_hosts()

    def is_node(self, host):
        """Whether `host` is a live node's. A node that joined since the last tick is not known
        yet, so a miss asks Redis again, at most once per NODES_RECHECK seconds (any address may
        cause a miss)."""
        if host in self.hosts:
            return True
        if time.monotonic() - self._refreshed < NODES_RECHECK:
            return False
        try:
            self.refresh()
        except RegistryUnreachable:
            return False    # Redis unreachable: logged by the renewal tick; nobody new is trusted
        return host in self.hosts

    def owner(self, name):
        """The other live node holding `name`, or None: from the cache, else one Redis round trip
        (RegistryUnreachable, a 503, when Redis does not answer)."""
        now = time.monotonic()
        cached = self._owners.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        asking = self._asking.get(name)
        if asking is not None:
            # A burst of visitors for one name costs one lookup: the rest wait for its answer,
            # which Redis's socket timeouts bound.
            node = asking.get()
            return self.owner(name) if node is _ASK_AGAIN else node
        asking = self._asking[name] = AsyncResult()
        try:
            node = self._lookup(name, now)
        except Exception as exc:
            asking.set_exception(exc)   # Redis unreachable: the same 503 for everyone waiting
            raise
        except BaseException:
            asking.set(_ASK_AGAIN)      # the asker was killed (its visitor left): not theirs to share
            raise
        finally:
            del self._asking[name]
        asking.set(node)
        return node

    def _lookup(self, name, now):
        node = self._names.owner(name)
        if node is not None and node.id == self._names.node_id:
            node = None     # ours by the registry, gone here: the tunnel just ended
        if len(self._owners) >= OWNER_CACHE_SIZE:
            self._owners.clear()
        ttl = self._names.lease * OWNER_CACHE_SHARE if node is not None else min(NO_OWNER_CACHE, self._names.lease)
        self._owners[name] = (now + ttl, node)
        return node

    def hand_over(self, node, visitor, req, ip):
        """Give `node` this visitor's connection (introduced as `ip`), from its request `req` on:
        its socket itself when the node is on this machine, else spliced over its internal port
        until both are done. Returns True when the socket was passed; raises HttpError (502)
        when the node cannot be reached."""
        data = raw_request_head(req) + visitor.buf
        if self._passer is not None and self._passer.pass_over(node.id, visitor.sock, ip, data):
            visitor.buf = b""
            return True
        sock = self._connect(node)
        try:
            self._watch_for_death(sock)
            peer, here = visitor.sock.getpeername()[:2], visitor.sock.getsockname()[:2]
            # `ip` differs from the peer behind a --trusted-proxies balancer's PROXY line: its
            # port is not kept, and 0 says so.
            introduction = proxy_line(peer if peer[0] == ip else (ip, 0), here)
            try:
                relay.send_all(sock, introduction + data,
                               lambda: self._limits.deadlines.bound(self._settings.head_timeout, ResponseTimeout))
            except (OSError, ResponseTimeout):
                raise self._failed(node, 502, "did not take the visitor's connection") from None
            visitor.buf = b""
            # The owner bounds every request and idle keep-alive itself; the splice's own bound
            # is the longest the owner lets an upgraded connection sit silent.
            relay.splice(visitor, relay.Reader(sock), idle=self._settings.splice_idle_timeout)
            return False
        finally:
            sock.close()

    def _watch_for_death(self, sock):
        """A node that loses power sends no FIN. Keepalive probes after a lease of silence end an
        idle hop (and the visitor's connection) within about a lease, instead of at the splice's
        idle bound; data left unacknowledged (or a window left shut) ends it after
        --response-timeout, the longest the owner itself lets a body pause. Not sooner: Linux
        counts a shut window against this bound, and a slow tunnel client shuts it for a while."""
        lease = max(1, int(self._names.lease))
        stall = max(self._settings.response_timeout, lease + 3)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, lease)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(stall * 1000))
        except (OSError, AttributeError):
            pass    # not Linux: the splice's idle bound still ends it

    def pass_on(self, node, visitor, req, head, framer):
        """Send the request to `node` and relay its answer to the visitor, as forward() does for a
        tunnel socket. Returns (whether the visitor connection may carry another request, the
        forward.Outcome); raises HttpError when the node could not be asked or did not answer."""
        keep_alive = req.keep_alive
        retry = framer.done and req.method in IDEMPOTENT_METHODS
        while True:
            conn, probe, reused = self._connection(node)
            try:
                outcome = forward(visitor, conn, req, head, framer, self._limits, close_src=not keep_alive)
            except (DestinationDied, BadResponse, ResponseTimeout) as exc:
                conn.sock.close()
                if isinstance(exc, DestinationDied) and reused and retry:
                    retry = False   # it closed a kept-alive connection just as we used it
                    continue
                what = _FAILED_HOW[type(exc)].format(why=getattr(exc, "message", ""),
                                                     seconds=self._settings.response_timeout)
                raise self._failed(node, FAILURES[type(exc)][0], what) from None
            except BaseException:
                conn.sock.close()
                raise
            if outcome.dst_reusable:
                self._keep(node, conn, probe)
            else:
                conn.sock.close()
            return outcome.in_sync and outcome.keep_alive and keep_alive, outcome

    def _connection(self, node):
        """(Reader, InputProbe, reused?): an idle connection to `node` with nothing unread, or
        a new one."""
        idle = self._idle.get((node.host, node.port), [])
        while idle:
            conn, probe = idle.pop()
            if not conn.buf and not probe.has_input():
                return conn, probe, True
            conn.sock.close()
        sock = self._connect(node)
        return relay.Reader(sock), relay.InputProbe(sock), False

    def _connect(self, node):
        try:
            return relay.connect((node.host, node.port), self._settings.socket_wait)
        except OSError as exc:
            raise self._failed(node, 502, "could not be reached (%s)" % (exc.strerror or exc)) from None

    def _keep(self, node, conn, probe):
        idle = self._idle.setdefault((node.host, node.port), [])
        if len(idle) < IDLE_PER_NODE:
            idle.append((conn, probe))
        else:
            conn.sock.close()

    def _failed(self, node, status, what):
        return HttpError(status, (
            "The server node at %s holds this tunnel, but it %s.\n"
            "Try again in a moment; if the node is gone, its tunnels come back on another node "
            "once their clients reconnect." % (node.host, what)), "node-unreachable")

    def close(self):
        if self._passer is not None:
            self._passer.close()
        for idle in self._idle.values():
            for conn, _probe in idle:
                conn.sock.close()
        self._idle.clear()
