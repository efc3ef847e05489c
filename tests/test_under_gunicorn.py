"""server/under_gunicorn.py on its own: finding the worker that loads the app, and the refusals
it makes before any port opens. The real thing, gunicorn processes, is in test_entrypoints.py."""
import types

import pytest
from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker

from localtunnel.server import under_gunicorn


class LoadingWorker(Worker):
    """A gunicorn Worker with only what build_app looks at: no arbiter, no sockets."""

    def __init__(self, workers=1, age=1):
        self.cfg = types.SimpleNamespace(workers=workers)
        self.age, self.alive = age, True

    def load_wsgi(self, start_server=None):
        # gunicorn's own load_wsgi calls the app loader, which imports lt_server and asks for app.
        if start_server is None:
            return under_gunicorn.worker_loading_us()
        return under_gunicorn.build_app(start_server)


def test_the_worker_loading_the_app_is_found_up_the_stack():
    worker = LoadingWorker()
    assert worker.load_wsgi() is worker


def test_no_worker_is_found_outside_one():
    assert under_gunicorn.worker_loading_us() is None


def test_more_than_one_worker_is_refused_before_the_server_starts(keep_logging):
    started = []
    with pytest.raises(AppImportError) as info:
        LoadingWorker(workers=3).load_wsgi(started.append)
    assert "run exactly one worker (-w 1)" in str(info.value) and "3 workers" in str(info.value)
    assert not started


@pytest.fixture
def keep_logging(monkeypatch):
    # build_app hands our loggers to gunicorn's; here that would hide later tests' log records.
    monkeypatch.setattr(under_gunicorn, "_log_through_gunicorn", lambda: None)


def test_the_one_worker_gets_the_started_servers_app(monkeypatch, keep_logging):
    monkeypatch.setenv("LT_PORT", "0")
    server = types.SimpleNamespace(app="the app")
    settings_seen = []

    def start_server(settings):
        settings_seen.append(settings)
        return server

    assert LoadingWorker().load_wsgi(start_server) == "the app"
    assert settings_seen[0].port == 0      # from LT_* variables, as gunicorn deployments set them


def test_a_bad_setting_is_one_line_not_a_traceback(monkeypatch, keep_logging):
    monkeypatch.setenv("LT_MAX_SOCKETS", "lots")
    with pytest.raises(AppImportError) as info:
        LoadingWorker().load_wsgi(lambda settings: pytest.fail("started with a bad setting"))
    assert "LT_MAX_SOCKETS" in str(info.value)


def test_with_redis_every_worker_is_a_node(monkeypatch, keep_logging):
    monkeypatch.setenv("LT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("LT_ADDRESS", "127.0.0.1")
    server = types.SimpleNamespace(app="a node's app")
    assert LoadingWorker(workers=3).load_wsgi(lambda settings: server) == "a node's app"


def test_the_refusal_of_more_workers_says_what_lifts_it():
    with pytest.raises(AppImportError) as info:
        LoadingWorker(workers=2).load_wsgi(lambda settings: pytest.fail("started"))
    assert "LT_REDIS_URL" in str(info.value)
