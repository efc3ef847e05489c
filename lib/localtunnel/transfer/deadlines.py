"""Coarse deadlines for many waits at once, without a timer per wait.

gevent.Timeout starts and cancels a libev timer through several Python layers, and a proxied
request waits three times (for the visitor's next request, for a free tunnel socket, for the
response): 13% of the server's CPU in a profile. Here a wait only records its deadline in a
dict; one sweeper greenlet wakes every `tick` seconds and throws the wait's exception into each
greenlet past due. The price is precision: a bound may run up to one tick late.
"""
import time

import gevent
from gevent import getcurrent


def tick_for(*bounds):
    """A tick a fifth of the shortest bound, between 10 ms and 1 s."""
    return max(0.01, min(1.0, min(bounds) / 5.0))


class Deadlines:
    def __init__(self, tick):
        self.tick = tick
        self._due = {}          # greenlet -> the _Bound it is inside
        self._sweeper = None

    def bound(self, seconds, exception):
        """`with deadlines.bound(s, Exc):` raises Exc in this greenlet if the block is still
        waiting `seconds` from now (give or take a tick)."""
        return _Bound(self, seconds, exception)

    def _register(self, greenlet, bound):
        self._due[greenlet] = bound
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep)

    def _sweep(self):
        """Runs while anything waits, and ends when nothing does (the next bound restarts it)."""
        loop = gevent.get_hub().loop
        try:
            while self._due:
                gevent.sleep(self.tick)
                now = time.monotonic()
                for greenlet, current in list(self._due.items()):
                    expired = _first_expired(current, now)
                    if expired is not None:
                        # Thrown from the hub, like gevent.Timeout does, and only if the
                        # greenlet is still inside that same bound when the callback runs.
                        loop.run_callback(self._expire, greenlet, current, expired)
        finally:
            self._sweeper = None

    def _expire(self, greenlet, current, expired):
        if self._due.get(greenlet) is not current or greenlet.dead:
            return
        if expired.outer is not None:
            self._due[greenlet] = expired.outer     # still inside the bounds around it
        else:
            del self._due[greenlet]
        greenlet.throw(expired.exception)


def _first_expired(bound, now):
    """The outermost bound past due in a chain of nested bounds, or None."""
    found = None
    while bound is not None:
        if bound.deadline <= now:
            found = bound
        bound = bound.outer
    return found


class _Bound:
    __slots__ = ("owner", "deadline", "exception", "greenlet", "outer")

    def __init__(self, owner, seconds, exception):
        self.owner = owner
        self.deadline = time.monotonic() + seconds
        self.exception = exception

    def __enter__(self):
        self.greenlet = getcurrent()
        self.outer = self.owner._due.get(self.greenlet)     # a bound this one is nested in
        self.owner._register(self.greenlet, self)
        return self

    def __exit__(self, *_exc):
        due = self.owner._due
        if due.get(self.greenlet) is self:
            if self.outer is not None:
                due[self.greenlet] = self.outer
            else:
                del due[self.greenlet]
        return False
