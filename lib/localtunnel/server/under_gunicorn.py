"""Serving inside `gunicorn -k gevent lt_server:app`: start the server in the one gevent worker
(or, with LT_REDIS_URL, in each of -w N workers, every one a node of a cluster), and refuse in one
line the setups that cannot work.

gunicorn's documented hooks (post_worker_init and friends) live in a config file, and a worker
class of our own would change the `-k gevent` every deployment already runs; neither fits a plain
`gunicorn -k gevent lt_server:app`. So the worker is found where gunicorn is loading the app: up
the call stack, in Worker.load_wsgi (worker_loading_us, tested on its own).
"""
import logging
import os
import sys
import time

import gevent
import gevent.monkey

from ..cli import ExitStatus
from . import config
from .listeners import BindError

RUN_IT = "gunicorn -k gevent lt_server:app"


def build_app(start_server):
    """The API app of a server that `start_server(settings)` has started inside gunicorn's gevent
    worker; setups that would split the tunnels across processes or run them on blocking
    sockets are refused first."""
    worker = worker_loading_us()
    if worker is None:
        # Loaded in the arbiter (--preload) or by another server: gunicorn would print a
        # traceback for an exception here, so say it in one line and stop.
        print("lt_server: lt_server:app runs only inside gunicorn's gevent worker, without "
              "--preload (the worker must patch before the app loads): " + RUN_IT, file=sys.stderr)
        raise SystemExit(ExitStatus.ERROR)
    if not gevent.monkey.is_module_patched("socket"):
        _refuse("run it with the gevent worker: " + RUN_IT)
    try:
        settings = config.from_sources(os.environ)
    except config.ConfigError as exc:
        _refuse(str(exc))
    if worker.cfg.workers != 1 and not settings.redis_url:
        _refuse_extra_workers(worker)   # with Redis each worker is a node of one cluster
    _log_through_gunicorn()
    try:
        return start_server(settings).app
    except BindError as exc:
        _refuse(str(exc))


def worker_loading_us():
    """The gunicorn Worker whose method is on the call stack (load_wsgi, loading the app), or
    None when no worker is loading us."""
    from gunicorn.workers.base import Worker

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Worker):
            return candidate
        frame = frame.f_back
    return None


def _refuse(message):
    from gunicorn.errors import AppImportError

    raise AppImportError("lt_server: " + message)


def _refuse_extra_workers(worker):
    """Every worker would refuse at once, and gunicorn's arbiter prints a traceback when two fail
    together. So the first says why, and the others wait (polling, as nothing tells a worker
    that the arbiter is stopping it) to be stopped along with it."""
    if worker.age > 1:
        deadline = time.monotonic() + 5
        while worker.alive and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if not worker.alive:
            raise SystemExit(0)
    _refuse("run exactly one worker (-w 1): tunnels live in one process's memory, and %d workers "
            "would each hold a different set; with LT_REDIS_URL set, each worker is a node of one "
            "cluster and -w %d works" % (worker.cfg.workers, worker.cfg.workers))


def _log_through_gunicorn():
    """Our lifecycle lines go where gunicorn's own go, at its level; access lines go to its
    access log when one is configured (--access-logfile), else to its error log."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    ours = logging.getLogger("localtunnel")
    ours.handlers[:] = gunicorn_log.handlers
    ours.setLevel(gunicorn_log.level)
    ours.propagate = False
    gunicorn_access = logging.getLogger("gunicorn.access")
    if gunicorn_access.handlers:
        access = logging.getLogger("localtunnel.access")
        access.handlers[:] = gunicorn_access.handlers
        access.setLevel(logging.INFO)
        access.propagate = False
