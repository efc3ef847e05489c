"""The server started the two ways users start it, as real processes: `python lt_server.py` and
`gunicorn -k gevent lt_server:app`; plus what each says when it cannot run."""
import os
import shutil
import signal
import socket
import sys
import time

import pytest
import requests

import helpers
from helpers import start_node_lt, tunnel_name, visit, wait_sockets

SERVER_ENV = {"LT_ADDRESS": "127.0.0.1", "LT_DOMAIN": "localhost", "LT_PORT": "0"}


def start_cli(procs, *flags, env=None):
    return procs([sys.executable, "lt_server.py", *flags], env=env)


def start_gunicorn(procs, *flags, env=None):
    full = dict(SERVER_ENV)
    full.update(env or {})
    return procs([sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", "127.0.0.1:0", *flags,
                  "lt_server:app"], env=full)


def front_port_of_cli(proc):
    return int(proc.wait_for(r"listening on 127\.0\.0\.1:(\d+)", 15).group(1))


def front_port_of_gunicorn(proc):
    return int(proc.wait_for(r"serving tunnels and the API on 127\.0\.0\.1:(\d+)", 20).group(1))


def assert_serves_a_tunnel(port, origin, procs):
    """The real Node client gets a tunnel and a visitor gets through it."""
    _, url = start_node_lt(procs, port, origin)
    name = tunnel_name(url)
    wait_sockets(port, name, 10)
    answer = visit(port, name, "/hello")
    assert answer.status_code == 200 and answer.text == "hello"


def start_cli_on_port_0(procs):
    proc = start_cli(procs, "--port", "0", "--address", "127.0.0.1", "-d", "localhost")
    return proc, front_port_of_cli(proc)


def start_gunicorn_on_port_0(procs):
    proc = start_gunicorn(procs)
    return proc, front_port_of_gunicorn(proc)


@pytest.mark.node
@pytest.mark.deadline(40)
@pytest.mark.parametrize("start", [start_cli_on_port_0, start_gunicorn_on_port_0], ids=["lt_server.py", "gunicorn"])
def test_serves_and_exits_0_on_sigterm(procs, origin, start):
    proc, port = start(procs)
    assert_serves_a_tunnel(port, origin, procs)
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in proc.output


@pytest.mark.deadline(30)
def test_gunicorns_own_port_serves_the_api_with_urls_on_the_front_port(procs):
    proc = start_gunicorn(procs)
    front = front_port_of_gunicorn(proc)
    api_port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", 5).group(1))
    info = requests.get("http://127.0.0.1:%d/?new" % api_port, headers={"Host": "localhost:%d" % api_port}).json()
    assert info["url"] == "http://%s.localhost:%d" % (info["id"], front)
    assert requests.get("http://127.0.0.1:%d/api/status" % api_port).json()["tunnels"] == 1


@pytest.mark.parametrize("flags, says", [
    (("-w", "2"), "run exactly one worker"),
    (("--preload",), "without --preload"),
])
def test_gunicorn_refuses_setups_that_would_split_the_registry(procs, flags, says):
    proc = start_gunicorn(procs, *flags)
    assert proc.wait(20) != 0
    assert says in proc.output and "Traceback" not in proc.output


def test_gunicorn_refuses_the_sync_worker(procs):
    proc = procs([sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "lt_server:app"], env=SERVER_ENV)
    assert proc.wait(20) != 0
    assert "gunicorn -k gevent" in proc.output and "Traceback" not in proc.output


def test_gunicorn_reports_a_bad_setting_in_one_line(procs):
    proc = start_gunicorn(procs, env={"LT_MAX_SOCKETS": "lots"})
    assert proc.wait(20) != 0
    assert "LT_MAX_SOCKETS='lots': expected a whole number" in proc.output
    assert "Traceback" not in proc.output


def test_port_in_use_is_one_line_naming_it_and_how_to_change_it(procs):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = start_cli(procs, "--port", str(port), "--address", "127.0.0.1")
        assert proc.wait(15) == 1
    finally:
        holder.close()
    lines = [line for line in proc.output.splitlines() if "lt-server:" in line]
    assert lines == ["lt-server: cannot listen on 127.0.0.1:%d: the port is already in use; "
                     "choose another with --port (or LT_PORT)" % port]
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("argv, env, says", [
    (["--bogus"], {}, "unknown or repeated option or argument: --bogus"),
    (["--port", "http"], {}, "--port='http': expected a whole number"),
    (["--port", "70000"], {}, "--port='70000': expected 0 to 65535"),
    (["--grace", "-1"], {}, "--grace='-1': expected a number of seconds above 0"),
    ([], {"LT_SECURE": "maybe"}, "LT_SECURE='maybe': expected true or false"),
    (["--auth-token", "two words"], {}, "--auth-token=(not shown): expected printable ASCII without spaces"),
    (["--log-level", "loud"], {}, "--log-level=loud: expected debug, info, warning or error"),
])
def test_bad_command_line_is_one_line_and_status_2(procs, argv, env, says):
    proc = start_cli(procs, *argv, env=env)
    assert proc.wait(15) == 2
    assert proc.output.strip() == "lt-server: " + says


def test_help_explains_every_flag(procs):
    proc = start_cli(procs, "--help")
    assert proc.wait(15) == 0
    for flag in ("--port", "--address", "--domain", "--secure", "--max-sockets", "--landing",
                 "--grace", "--socket-wait", "gunicorn -k gevent lt_server:app"):
        assert flag in proc.output


def test_every_setting_has_a_flag_and_a_variable_documented_in_help_and_readme():
    from localtunnel.server import config

    import lt_server
    with open(os.path.join(helpers.ROOT, "README.md")) as readme:
        guide = readme.read()
    for field, (_parser, flag) in config.FIELDS.items():
        assert flag in lt_server.__doc__, flag
        assert "`%s`" % flag in guide and "`%s`" % config.env_name(field) in guide, field


@pytest.mark.parametrize("field, raw, value, flag, flag_value", [
    ("max_visitors", "0", 0, "7", 7),
    ("splice_idle_timeout", "30", 30.0, "0.5", 0.5),
    ("max_tunnels", "5", 5, "6", 6),
    ("max_tunnels_per_address", "2", 2, "3", 3),
    ("new_per_minute", "10", 10, "11", 11),
    ("check_client_address", "false", False, "true", True),
    ("auth_token", "s3cret", "s3cret", "other", "other"),
])
def test_limits_come_from_variables_and_flags_and_a_flag_wins(field, raw, value, flag, flag_value):
    from localtunnel.server import config

    environ = {config.env_name(field): raw}
    assert getattr(config.from_sources(environ), field) == value
    assert getattr(config.from_sources(environ, {field: flag}), field) == flag_value


def test_the_console_script_is_installed(procs):
    script = helpers.os.path.join(helpers.os.path.dirname(sys.executable), "lt-server")
    proc = procs([script, "--version"])
    assert proc.wait(15) == 0 and proc.output.strip() == "0.1.0"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to drop to an unprivileged user with setpriv")
def test_privileged_port_without_privileges_is_one_line(procs):
    proc = procs(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                  "lt_server.py", "--port", "80", "--address", "127.0.0.1"])
    assert proc.wait(15) == 1
    assert proc.output.strip() == (
        "lt-server: cannot listen on 127.0.0.1:80: permission denied (ports below 1024 need root or "
        "CAP_NET_BIND_SERVICE); choose another with --port (or LT_PORT)")
