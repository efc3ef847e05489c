"""The tunnels a server holds, by name. Corresponds to lib/ClientManager.js in localtunnel/server.

It hands out names (the one asked for, a reclaimed one, or a random readable one) and removes
tunnels when their grace period ends. One process holds it: tunnels live in this memory.
"""
import logging
import random
from collections import Counter

from ..wire import protocol
from ..wire.http11 import HttpError
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
    def __init__(self, settings, deadlines, rng=None):
        self.settings = settings
        self.deadlines = deadlines
        self._tunnels = {}
        self._per_address = Counter()   # client address -> tunnels it holds
        self._rng = rng or random.SystemRandom()

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
                self.remove(held)
            else:
                tunnel_id = None    # the reference server's answer: a fresh random id
        if tunnel_id is None:
            tunnel_id = self._random_free_id()
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

    def _random_free_id(self):
        for _ in range(RANDOM_ID_TRIES):
            candidate = protocol.random_id(self._rng)
            if candidate not in self._tunnels:
                return candidate
        raise RegistryFull()

    def remove(self, tunnel):
        if self._tunnels.get(tunnel.id) is tunnel:
            del self._tunnels[tunnel.id]
            self._per_address[tunnel.client_addr] -= 1
            if not self._per_address[tunnel.client_addr]:
                del self._per_address[tunnel.client_addr]
        tunnel.remove()

    def count_for(self, client_addr):
        return self._per_address.get(client_addr, 0)

    def close_all(self):
        for tunnel in list(self._tunnels.values()):
            self.remove(tunnel)

    def total_sockets(self):
        return sum(t.connected_sockets for t in self._tunnels.values())
