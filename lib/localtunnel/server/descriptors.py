"""Open-file descriptors: a visitor limit that fits them, and a listener that meets their end.

The Node server has neither: past `ulimit -n` its accept fails and visitors wait unanswered.
Every visitor connection and every tunnel socket is a descriptor, so the server fits
--max-visitors to the limit at start, and its public listener pauses quietly on EMFILE.
"""
import dataclasses
import errno
import logging
import os
import resource
import time

import gevent
from gevent.server import StreamServer

log = logging.getLogger(__name__)

#: Descriptors kept back for the process itself (listeners, logs, the event loop).
FD_RESERVE = 64


def fit_descriptor_limit(settings):
    """(Settings whose --max-visitors fits the open-file limit, a warning to log or None).

    Every visitor is a descriptor, and so is every tunnel socket. Past the limit accept() fails
    with EMFILE, and visitors would wait unanswered instead of getting 503 `busy`. So the soft
    limit is raised to the hard one, and --max-visitors lowered, with a warning, to half of what
    is left after a reserve: the other half is for tunnel sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass    # keep what we have; the check below still fits visitors into it
    if soft == resource.RLIM_INFINITY:
        return settings, None
    room = max(1, (soft - FD_RESERVE) // 2)
    if settings.max_visitors and settings.max_visitors <= room:
        return settings, None
    warning = ("the open-file limit is %d, room for about %d visitors: --max-visitors lowered from %s "
               "to %d (raise it with `ulimit -n` or LimitNOFILE= in the systemd unit)"
               % (soft, room, settings.max_visitors or "no limit", room))
    return dataclasses.replace(settings, max_visitors=room), warning


class Acceptor(StreamServer):
    """A StreamServer that meets the open-file limit with a warning and a pause, not a traceback
    per refused accept: the visitors wait in the backlog until descriptors free up."""

    #: Seconds accepting pauses after EMFILE; gevent would log a traceback and back off too.
    PAUSE = 0.1
    _warned = -1e9      # when the last warning went out: one every 10 s is enough

    def do_read(self):
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        now = time.monotonic()
        if now - Acceptor._warned > 10:
            Acceptor._warned = now
            log.warning("front: out of file descriptors (%s); pausing new connections", os.strerror(errno.EMFILE))
        self.stop_accepting()
        gevent.spawn_later(self.PAUSE, self._resume)
        return None

    def _resume(self):
        if self.started:
            self.start_accepting()
