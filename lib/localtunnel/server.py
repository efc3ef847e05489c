"""The server's composition root: a registry, the API app over it, and the front port.

Corresponds to localtunnel/server's server.js + bin/server. Both entry points build one of these:
`lt-server` directly, and `gunicorn -k gevent lt_server:app` inside its single gevent worker.
"""
import dataclasses
import logging
import resource

import gevent.monkey

from .admission import Admission
from .api import create_app
from .deadlines import Deadlines, tick_for
from .front import Front
from .metrics import Metrics
from .registry import Registry

log = logging.getLogger(__name__)

#: Descriptors kept back for the process itself (listeners, logs, the event loop).
FD_RESERVE = 64


class NotPatched(RuntimeError):
    """Library code never patches; it refuses to run on blocking sockets instead."""


class Server:
    def __init__(self, settings):
        if not gevent.monkey.is_module_patched("socket"):
            raise NotPatched("the localtunnel server needs gevent's monkey patching, done first by its entry point")
        settings, self._fd_warning = fit_descriptor_limit(settings)
        self.settings = settings
        self.deadlines = Deadlines(tick_for(settings.socket_wait, settings.head_timeout,
                                            settings.keepalive_timeout, settings.response_timeout))
        self.registry = Registry(settings, self.deadlines)
        self.metrics = Metrics(self.registry)
        self.admission = Admission(settings, self.registry)
        self.app = create_app(self.registry, settings, self.metrics, self.admission)
        self.front = Front(self.registry, self.app, settings, self.deadlines, self.metrics)

    @property
    def port(self):
        return self.front.port

    def start(self):
        """Open the public port; raises front.BindError with advice when it cannot."""
        self.front.start()
        if self._fd_warning:
            log.warning("%s", self._fd_warning)     # said once the server really runs        # With port 0 the OS chose; the API builds URLs from the port visitors really use.
        self.settings.port = self.front.port

    def stop(self):
        """Stop accepting visitors, close every tunnel, answer everyone still waiting."""
        self.front.stop()
        self.registry.close_all()
        log.info("server stopped")


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
