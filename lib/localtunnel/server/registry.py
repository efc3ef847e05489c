"""The tunnels a server holds, by name. Corresponds to lib/ClientManager.js in localtunnel/server.

It hands out names (the one asked for, a reclaimed one, or a random readable one) and removes
tunnels when their grace period ends. One process holds it: tunnels live in this memory.
"""
import logging
import random
from collections import Counter

from ..wire import protocol
from ..wire.http11 import HttpError
from .cluster import LocalNames, RegistryUnreachable
from .tunnel import Tunnel

log = logging.getLogger(__name__)

#: Random ids drawn before giving up on a free one: with ~600,000 ids, a collision streak this
#: long means the server is full, not unlucky.
RANDOM_ID_TRIES = 64


class RegistryFull(HttpError):
    """No free random id could be found."""

    def __init__(self):
        super().__init__(503, "No free tunnel names right now; try again in a minute.", "no-free-name",
                         [("Retry-After", "60")])


class Registry:
    """This process's tunnels. `names` (cluster.LocalNames or cluster.SharedNames) says which
    names are this node's to give: alone, all of them; in a cluster, those no live node holds."""

    def __init__(self, settings, deadlines, rng=None, names=None):
        self.settings = settings
        self.deadlines = deadlines
        self.names = names or LocalNames()
        self._tunnels = {}
        self._per_address = Counter()   # client address -> tunnels it holds
        self._rng = rng or random.SystemRandom()
        self._unreleased = set()        # names Redis did not hear us give up; retried on renewal

    def __len__(self):
        return len(self._tunnels)

    def get(self, tunnel_id):
        return self._tunnels.get(tunnel_id)

    def create(self, requested=None, client_addr=None):
        """A started tunnel for `requested` if it can have it, else under a random id.

        The caller has already checked `requested` against the name rule."""
        tunnel_id = requested
        held = self._tunnels.get(requested) if requested else None
        if held is not None:
            if self._may_reclaim(held, client_addr):
                log.info("tunnel %s: reclaimed by %s", requested, client_addr)
                self.remove(held, release=False)    # the name stays ours for the new tunnel
            else:
                tunnel_id = None    # the reference server's answer: a fresh random id
        if tunnel_id is not None and held is None and not self.names.claim(tunnel_id, client_addr):
            tunnel_id = None        # another node holds it: the same answer
        if tunnel_id is None:
            tunnel_id = self._random_free_id(client_addr)
        self._unreleased.discard(tunnel_id)
        tunnel = Tunnel(tunnel_id, self.settings, client_addr, self.remove, self.deadlines)
        tunnel.start()
        self._tunnels[tunnel_id] = tunnel
        self._per_address[client_addr] += 1
        return tunnel

    def _may_reclaim(self, held, client_addr):
        # PROTOCOL.md B7, narrowed: only a restarted client behind the same address. While a name
        # sits in its grace period (its client dropped for a moment), anyone else taking it would
        # receive its owner's visitors and webhooks; once the grace ends, the name is free.
        return held.client_addr == client_addr

    def _random_free_id(self, client_addr):
        for _ in range(RANDOM_ID_TRIES):
            candidate = protocol.random_id(self._rng)
            if candidate not in self._tunnels and self._claims_random(candidate, client_addr):
                return candidate
        raise RegistryFull()

    def _claims_random(self, candidate, client_addr):
        try:
            return self.names.claim(candidate, client_addr)
        except HttpError:
            return False    # a random name held for this very client elsewhere: draw another

    def remove(self, tunnel, release=True):
        if self._tunnels.get(tunnel.id) is tunnel:
            del self._tunnels[tunnel.id]
            self._per_address[tunnel.client_addr] -= 1
            if not self._per_address[tunnel.client_addr]:
                del self._per_address[tunnel.client_addr]
            if release:
                self._release(tunnel.id)
        tunnel.remove()

    def _release(self, name):
        try:
            self.names.release(name)
        except RegistryUnreachable:
            self._unreleased.add(name)  # else the name stays ours in Redis for as long as we live

    def renew(self):
        """The cluster's renewal tick: say this node is alive, give up the names Redis did not
        hear us release, and after an outage claim again what we serve (a Redis that restarted
        empty forgot it), closing tunnels whose names another node took meanwhile."""
        recovered = self.names.renew()
        for name in list(self._unreleased):
            if name not in self._tunnels:
                self.names.release(name)
            self._unreleased.discard(name)
        if recovered:
            clients = {name: tunnel.client_addr for name, tunnel in self._tunnels.items()}
            for name in self.names.restore(clients):
                log.warning("tunnel %s: another node took its name while the registry was "
                            "unreachable; closing it here", name)
                self.remove(self._tunnels[name], release=False)

    def count_for(self, client_addr):
        return self._per_address.get(client_addr, 0)

    def close_all(self):
        for tunnel in list(self._tunnels.values()):
            self.remove(tunnel)
        try:
            self.names.leave()
        except RegistryUnreachable:
            pass    # the node's key lapses by itself within a lease

    def total_sockets(self):
        return sum(t.connected_sockets for t in self._tunnels.values())
