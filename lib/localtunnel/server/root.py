"""The server's composition root: a registry, the API app over it, and the front port.

Corresponds to localtunnel/server's server.js + bin/server. Both entry points build one of these:
`lt-server` directly, and `gunicorn -k gevent lt_server:app` inside its single gevent worker.
"""
import logging
import uuid

import gevent
import gevent.monkey

from ..transfer.deadlines import Deadlines, tick_for
from .admission import Admission
from .api import create_app
from .cluster import LocalNames, RegistryUnreachable, SharedNames
from .descriptors import fit_descriptor_limit
from .front import Front
from .metrics import Metrics
from .registry import Registry

log = logging.getLogger(__name__)


#: Seconds any one Redis command may take: a registry that stalls must not stall a request.
REDIS_TIMEOUT = 2.0


def shared_names(settings):
    """The registry's names: a cluster's in Redis with --redis, else this process's own."""
    if not settings.redis_url:
        return LocalNames()
    import redis    # only a clustered server needs the package: pip install 'localtunnel-py[redis]'

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT,
                                  socket_connect_timeout=REDIS_TIMEOUT)
    return SharedNames(client, uuid.uuid4().hex[:12], settings.node_address, settings.lease)


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
        self.registry = Registry(settings, self.deadlines, names=shared_names(settings))
        self._renewal = None
        self.metrics = Metrics(self.registry, self.registry.names.node_id)
        self.admission = Admission(settings, self.registry)
        self.app = create_app(self.registry, settings, self.metrics, self.admission, lambda: self.front.port)
        self.front = Front(self.registry, self.app, settings, self.deadlines, self.metrics)

    @property
    def port(self):
        return self.front.port

    def start(self):
        """Open the public port; raises listeners.BindError with advice when it cannot."""
        self.front.start()
        if self._fd_warning:
            log.warning("%s", self._fd_warning)     # said once the server really runs
        if self.settings.redis_url:
            self.registry.names.port = self.front.internal_port   # other nodes hand visitors over to it
            log.info("cluster: node %s at %s, internal port %d (other nodes hand visitors over to it), "
                     "lease %g s", self.registry.names.node_id, self.settings.node_address,
                     self.front.internal_port, self.settings.lease)
            self._renew()       # alive in the registry before the first claim
            self._renewal = gevent.spawn(self._renew_forever)

    def _renew_forever(self):
        # A third of the lease: two ticks can fail before the other nodes see this one lapse.
        while True:
            gevent.sleep(self.settings.lease / 3)
            self._renew()

    def _renew(self):
        try:
            self.registry.renew()
            self.front.peers.refresh()
        except RegistryUnreachable:
            pass    # logged once per outage by the registry's names; held tunnels keep serving

    def stop(self):
        """Stop accepting visitors, close every tunnel, answer everyone still waiting."""
        self.front.stop()
        if self._renewal is not None:
            self._renewal.kill()
        if self.front.peers is not None:
            self.front.peers.close()
        self.registry.close_all()
        log.info("server stopped")
