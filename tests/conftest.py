"""Shared fixtures. Patches first: tests drive real loopback sockets cooperatively."""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from localtunnel.server.config import Settings  # noqa: E402
from localtunnel.server.root import Server  # noqa: E402

import helpers  # noqa: E402

#: Every test ends within this many seconds unless it says otherwise with @pytest.mark.deadline.
DEFAULT_DEADLINE = 30


class DeadlineExceeded(AssertionError):
    pass


@pytest.fixture(autouse=True)
def deadline(request):
    marker = request.node.get_closest_marker("deadline")
    seconds = marker.args[0] if marker else DEFAULT_DEADLINE
    timer = gevent.Timeout(seconds, DeadlineExceeded("test ran past its %ss deadline" % seconds))
    timer.start()
    try:
        yield
    finally:
        timer.close()


def fast_settings(**overrides):
    """Settings for in-process servers: loopback, an OS-chosen port, short bounds."""
    values = dict(port=0, address="127.0.0.1", domain="localhost", connect_grace=2.0, grace=1.0,
                  socket_wait=2.0, head_timeout=2.0, response_timeout=10.0, keepalive_timeout=5.0)
    values.update(overrides)
    return Settings(**values)


def _started(server):
    server.start()
    return server


def _keeping(make):
    """A factory that remembers what it made, so its fixture can stop it all at the end."""
    made = []

    def factory(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]
    return factory, made


@pytest.fixture
def make_server():
    factory, servers = _keeping(lambda **overrides: _started(Server(fast_settings(**overrides))))
    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture(scope="session")
def origin():
    """The Node origin (tests/node/origin.js): its port."""
    proc = helpers.Proc(["node", os.path.join(ROOT, "tests", "node", "origin.js")])
    port = int(proc.wait_for(r"listening (\d+)", 15).group(1))
    yield port
    proc.stop()


@pytest.fixture
def procs():
    """Subprocesses started by a test, all stopped at its end."""
    start, started = _keeping(helpers.Proc)
    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def redis_server(procs):
    """A redis-server of the test's own on a free loopback port, persistence off."""
    return helpers.RedisServer(procs)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.rep_call...), so a fixture's teardown can tell
    whether the test failed (the browser tests save a screenshot then)."""
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture
def reference_server(procs):
    """The Node.js localtunnel server (from ../shared/anchors, installed by
    scripts/install-reference-server) on a free loopback port; its port."""
    esm = os.path.join(helpers.REFERENCE_SERVER, "node_modules", "esm")
    if not os.path.exists(esm):
        pytest.skip("the Node localtunnel server is not installed: it comes from ../shared/anchors "
                    "(scripts/install-reference-server, run by make test-setup)")
    port = helpers.free_port()
    proc = procs(["node", "-r", esm, os.path.join(helpers.REFERENCE_SERVER, "bin", "server"),
                  "--port", str(port), "--address", "127.0.0.1", "--domain", "localhost"])
    helpers.wait_until(lambda: _answers(port), 15, "the Node server to listen:\n" + proc.output)
    return port


def _answers(port):
    try:
        return helpers.requests.get("http://127.0.0.1:%d/api/status" % port, timeout=1).status_code == 200
    except helpers.requests.RequestException:
        return False
