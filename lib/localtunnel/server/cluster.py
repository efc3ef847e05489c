"""Tunnel names shared by several server processes and machines, in one Redis (issue 14).

A name belongs to a node, and a node is alive while its one liveness key is. Renewal therefore
costs one Redis command per node per tick, whatever the number of tunnels: with 100 nodes renewing
every lease/3 seconds that is about 30 commands a second, where a lease per tunnel would cost
about 30,000 at 100,000 tunnels. A name whose node has lapsed is taken over atomically, in a Lua
script, by whoever claims it next.

Keys (under a prefix, "lt:" by default):
  node:<node id>     "HOST PORT": where clients and the other nodes reach the node (its address,
                     and its public port for visitors passed on), expiring after the lease unless
                     renewed
  name:<name>        the id of the node that holds the tunnel; no expiry of its own
  tunnels:<node id>  the names a node holds, for counting and for a takeover to tidy up

The scripts read keys they are not handed in KEYS (the owner's liveness key is only known once the
name is read), which a single Redis allows and Redis Cluster does not: one Redis, replicated for
safety if need be, is the registry.
"""
import collections
import logging

from ..wire.http11 import HttpError

log = logging.getLogger(__name__)

#: Claim `name` for this node and client: free, already ours, or held by a node whose liveness
#: key lapsed. It renews this node's own key too: a name claimed by a node the registry thinks dead
#: (after a Redis restart, before the next renewal) could be taken over at once. A name a live
#: node holds for the same client address is that client coming back after its node died: it
#: learns how many ms that node has left (PROTOCOL.md B7: its name, not a random one).
#: KEYS: name key, this node's tunnels set, the name's client key. ARGV: node id, prefix, name,
#: address, lease in ms, client address. Returns 1 (ours), 0 (another client's), or -ms.
_CLAIM = """
redis.call('SET', ARGV[2] .. 'node:' .. ARGV[1], ARGV[4], 'PX', ARGV[5])
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('SET', KEYS[3], ARGV[6])
  return 1
end
if owner then
  local left = redis.call('PTTL', ARGV[2] .. 'node:' .. owner)
  if left ~= -2 then
    if ARGV[6] ~= '' and redis.call('GET', KEYS[3]) == ARGV[6] then return -math.max(left, 1) end
    return 0
  end
  redis.call('SREM', ARGV[2] .. 'tunnels:' .. owner, ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[6])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""

#: Let go of `name` if this node holds it. KEYS: name key, this node's tunnels set, the name's
#: client key. ARGV: node id, name. Returns 1 when it was ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

#: Who holds `name`: {node id, node address}, or nil when nobody does or the holder has lapsed.
#: KEYS: name key. ARGV: prefix.
_OWNER = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
local address = redis.call('GET', ARGV[1] .. 'node:' .. owner)
if not address then return nil end
return {owner, address}
"""


#: A live node as the registry names it: its id, and where to reach its public port.
Node = collections.namedtuple("Node", "id host port")


class LocalNames:
    """The names of a server that runs alone: every name is this process's to give, so the
    registry's own dict is the whole truth. The same methods as SharedNames, doing nothing."""

    node_id = address = None
    port = 0

    def claim(self, name, client=None):
        return True

    def release(self, name):
        return True

    def owner(self, name):
        return None

    def node_hosts(self):
        return frozenset()

    def census(self):
        return None

    def renew(self):
        return False

    def leave(self):
        pass

    def restore(self, clients):
        return []


class RegistryUnreachable(HttpError):
    """Redis did not answer: new tunnels and requests for other nodes' tunnels wait for it."""

    def __init__(self):
        super().__init__(503, "The tunnel registry (Redis) is unreachable; tunnels this server already "
                              "holds keep working. Try again in a moment.", "registry-unreachable",
                         [("Retry-After", "5")])


class StillHeld(HttpError):
    """A client asked for its own name back while the node that held its tunnel still counts as
    alive: it will lapse (the node died) or the tunnel ends there; either way, ask again then."""

    def __init__(self, name, seconds):
        wait = max(1, int(seconds + 0.999))
        super().__init__(503, "Tunnel %s is still held by the server node it was on, which stopped "
                              "answering or is closing it; it is yours again within %d s." % (name, wait),
                         "name-held", [("Retry-After", str(wait))])


class SharedNames:
    """This node's view of the cluster's names. Every method is one round trip to Redis (none
    waits longer than the client's socket timeouts) and raises RegistryUnreachable when Redis
    does not answer; an outage is logged once, and its end once."""

    def __init__(self, redis_client, node_id, address, lease, prefix="lt:"):
        self._redis = redis_client
        self.node_id, self.address, self.lease = node_id, address, lease
        self.port = 0       # the public port, once the front listens (root.py sets it)
        self._prefix = prefix
        self._node_key = prefix + "node:" + node_id
        self._tunnels_key = prefix + "tunnels:" + node_id
        self._claim = redis_client.register_script(_CLAIM)
        self._release = redis_client.register_script(_RELEASE)
        self._owner = redis_client.register_script(_OWNER)
        self._down = False
        self._recovered = False     # an outage ended since the last renew()

    def renew(self):
        """Say this node is alive for another lease: one SET, whatever the number of tunnels.
        Call it every lease/3 seconds or so (the server's renewal greenlet does). Returns True
        when this ends an outage: the registry may have lost this node's names meanwhile."""
        self._call(self._redis.set, self._node_key, self._reach(), px=int(self.lease * 1000))
        recovered, self._recovered = self._recovered, False
        return recovered

    def leave(self):
        """Stop being alive now, so other nodes may take this node's names at once."""
        self._call(self._redis.delete, self._node_key)

    def claim(self, name, client=None):
        """Whether this node now holds `name` for `client` (an address): it was free, ours, or
        its node had lapsed. Raises StillHeld when a node that still counts as alive holds it
        for this same client: the client is back, its old node is dying or dead."""
        result = self._call(self._claim, keys=[self._name_key(name), self._tunnels_key, self._client_key(name)],
                            args=[self.node_id, self._prefix, name, self._reach(), int(self.lease * 1000),
                                  client or ""])
        if result < 0:
            raise StillHeld(name, -result / 1000.0)
        return bool(result)

    def release(self, name):
        """Give `name` up, if this node holds it; a name another node took over is left alone."""
        return bool(self._call(self._release, keys=[self._name_key(name), self._tunnels_key, self._client_key(name)],
                               args=[self.node_id, name]))

    def owner(self, name):
        """The live Node holding `name`, or None."""
        found = self._call(self._owner, keys=[self._name_key(name)], args=[self._prefix])
        if not found:
            return None
        host, _, port = _text(found[1]).rpartition(" ")
        return Node(_text(found[0]), host, int(port))

    def node_hosts(self):
        """The hosts of every live node: their X-Forwarded-* headers are trusted, since a
        visitor passed on from another node arrives from it. O(nodes), once per renewal tick."""
        keys = self._call(self._node_keys)
        values = self._call(self._redis.mget, keys) if keys else []
        return frozenset(_text(value).rpartition(" ")[0] for value in values if value)

    def census(self):
        """{"nodes": live nodes, "tunnels": names they hold}, for /api/status: O(nodes)."""
        def count():
            node_keys = self._node_keys()
            pipe = self._redis.pipeline(transaction=False)
            for key in node_keys:
                pipe.scard(self._prefix + "tunnels:" + _text(key).rsplit(":", 1)[1])
            return {"nodes": len(node_keys), "tunnels": sum(pipe.execute()) if node_keys else 0}
        return self._call(count)

    def restore(self, clients):
        """Claim again every name this node serves (`clients`: name -> client address), after
        Redis came back empty or lost keys: returns those another node holds now, whose tunnels
        this node must give up."""
        lost = []
        for name, client in clients.items():
            try:
                if not self.claim(name, client):
                    lost.append(name)
            except StillHeld:
                lost.append(name)   # its client already went to another node
        return lost

    def held_here(self):
        """How many names this node holds, by the registry's count."""
        return self._call(self._redis.scard, self._tunnels_key)

    def _node_keys(self):
        """The liveness keys of every live node (a SCAN: O(nodes), never a blocking KEYS)."""
        return list(self._redis.scan_iter(match=self._prefix + "node:*", count=1000))

    def _reach(self):
        return "%s %d" % (self.address, self.port)

    def _client_key(self, name):
        return self._prefix + "client:" + name

    def _name_key(self, name):
        return self._prefix + "name:" + name

    def _call(self, function, *args, **kwargs):
        import redis    # only a clustered server needs the package

        try:
            result = function(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._down:
                self._down = True
                log.warning("cluster: the registry (Redis) is unreachable: %s; serving the tunnels "
                            "this node holds, refusing new ones until it answers", exc)
            raise RegistryUnreachable() from None
        if self._down:
            self._down, self._recovered = False, True
            log.warning("cluster: the registry (Redis) answers again")
        return result


def _text(value):
    return value.decode() if isinstance(value, bytes) else value
