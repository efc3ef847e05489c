"""The other nodes of a cluster, as the front sees them: who holds a tunnel, and passing a visitor's
request on to that node over one internal hop (issue 14).

The hop is plain HTTP/1.1 to the owner's own port (its public one may be shared by several
workers), a kept-alive connection per request in flight, so the owner applies every limit and answers every error page itself, exactly as for a
visitor of its own; WebSocket upgrades and long bodies go through forward() as anywhere else. The
visitor's address travels in X-Forwarded-For, which the owner trusts from live nodes only.
"""
import time

from gevent.event import AsyncResult

from ..transfer import relay
from ..transfer.forward import FAILURES, BadResponse, DestinationDied, ResponseTimeout, forward
from ..wire.http11 import IDEMPOTENT_METHODS, HttpError

#: How long a name's owner (or its absence) is remembered: a request normally costs no Redis round
#: trip, and a tunnel that moved or ended is noticed within half a lease.
OWNER_CACHE_SHARE = 0.5
#: Seconds a name no node holds is remembered as such: a tunnel just created elsewhere must not
#: stay invisible here for long.
NO_OWNER_CACHE = 1.0
#: Names remembered at most: random names from visitors must not grow the cache for ever.
OWNER_CACHE_SIZE = 4096
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

    def refresh(self):
        """On each renewal tick: which hosts are nodes (trusted to say who a visitor is)."""
        self.hosts = self._names.node_hosts()

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
        try:
            sock = relay.connect((node.host, node.port), self._settings.socket_wait)
        except OSError as exc:
            raise self._failed(node, 502, "could not be reached (%s)" % (exc.strerror or exc)) from None
        return relay.Reader(sock), relay.InputProbe(sock), False

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
        for idle in self._idle.values():
            for conn, _probe in idle:
                conn.sock.close()
        self._idle.clear()
