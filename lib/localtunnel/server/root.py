"""The server's composition root: a registry, the API app over it, and the front port.

Corresponds to localtunnel/server's server.js + bin/server. Both entry points build one of these:
`lt-server` directly, and `gunicorn -k gevent lt_server:app` inside its single gevent worker.
"""
import logging

import gevent.monkey

from ..transfer.deadlines import Deadlines, tick_for
from .admission import Admission
from .api import create_app
from .descriptors import fit_descriptor_limit
from .front import Front
from .metrics import Metrics
from .registry import Registry

log = logging.getLogger(__name__)


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
        self.app = create_app(self.registry, settings, self.metrics, self.admission, lambda: self.front.port)
        self.front = Front(self.registry, self.app, settings, self.deadlines, self.metrics)

    @property
    def port(self):
        return self.front.port

    def start(self):
        """Open the public port; raises front.BindError with advice when it cannot."""
        self.front.start()
        if self._fd_warning:
            log.warning("%s", self._fd_warning)     # said once the server really runs

    def stop(self):
        """Stop accepting visitors, close every tunnel, answer everyone still waiting."""
        self.front.stop()
        self.registry.close_all()
        log.info("server stopped")
