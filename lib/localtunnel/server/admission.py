"""Who may create a tunnel: the creation token, a rate per address, and tunnel counts.

The Node server lets anyone create any number of tunnels. A public server bounds what one address
can take, and may require a token. Refusals carry their status and say what to do; 429s say when
to come back (Retry-After), which both clients treat as "try again", not as a final no.
"""
import math
import time
from collections import deque

from ..wire import protocol
from ..wire.http11 import HttpError

#: The rate limit's window.
WINDOW = 60.0
#: Addresses the rate limiter remembers before it forgets those idle for a whole window.
MAX_TRACKED = 100000
#: Retry-After for a full server or address: tunnels come and go all the time (a client that
#: stops frees its name within the grace period), so ask clients back soon, not in a minute.
RETRY_AFTER_SECONDS = 10


class Refusal(HttpError):
    """Who asked may not create a tunnel (or look one up) now; the API answers with it."""

    def __init__(self, status, message, headers=()):
        super().__init__(status, message, "refused", headers)


class Admission:
    def __init__(self, settings, registry):
        self.settings, self.registry = settings, registry
        self._recent = {}   # address -> deque of creation times within the window
        self._lookups = {}  # address -> deque of status lookup times within the window

    def check(self, address, authorization, requested):
        """Raise Refusal unless `address` may create a tunnel (named `requested`, or any)."""
        token = self.settings.auth_token
        if token and not protocol.token_matches(authorization, token):
            raise Refusal(401, "This server needs a token to create tunnels: run lt-client with "
                               "--auth-token TOKEN, or the npm client with --host https://user:TOKEN@host.",
                          [("WWW-Authenticate", 'Basic realm="localtunnel"')])
        self._rate(self._recent, address, self.settings.new_per_minute, "tunnel requests", time.monotonic())
        held = self.registry.get(requested) if requested else None
        if held is not None and held.client_addr == address:
            return      # a client taking its own name back replaces its tunnel, adds none
        self._counts(address)

    def check_lookup(self, address):
        """Raise Refusal (429) once `address` made --lookups-per-minute status lookups in a
        minute: whether a name exists is one request each, and names are guessable."""
        self._rate(self._lookups, address, self.settings.lookups_per_minute, "tunnel status lookups",
                   time.monotonic())

    def _rate(self, store, address, limit, what, now):
        recent = store.get(address)
        if recent is None:
            _forget_idle(store, now)
            recent = store[address] = deque()
        while recent and recent[0] <= now - WINDOW:
            recent.popleft()
        if len(recent) >= limit:
            wait = max(1, math.ceil(recent[0] + WINDOW - now))
            raise Refusal(429, "Too many %s from your address: at most %d a minute. "
                               "Try again in %d s." % (what, limit, wait), [("Retry-After", str(wait))])
        recent.append(now)

    def _counts(self, address):
        if len(self.registry) >= self.settings.max_tunnels:
            raise Refusal(503, "This server holds its maximum of %d tunnels. Try again later."
                          % self.settings.max_tunnels, [("Retry-After", str(RETRY_AFTER_SECONDS))])
        limit = self.settings.max_tunnels_per_address
        if self.registry.count_for(address) >= limit:
            raise Refusal(429, "Your address holds %d tunnels, the most one address may. Close one "
                               "(stop its client) and try again." % limit, [("Retry-After", str(RETRY_AFTER_SECONDS))])


def _forget_idle(store, now):
    """Keep a limiter's memory bounded: past MAX_TRACKED addresses, drop those idle a window."""
    if len(store) < MAX_TRACKED:
        return
    for address, recent in list(store.items()):
        if not recent or recent[-1] <= now - WINDOW:
            del store[address]
