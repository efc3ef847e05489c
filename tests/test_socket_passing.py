"""Passing visitor sockets between nodes of one machine (server/passing.py), attacked: a door
reachable by any local process, messages that break the format, and a door squatted by another
user. Real Unix sockets, real processes of another user (nobody) where the test runs as root."""
import array
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import gevent

import pytest

import helpers
from helpers import new_tunnel
from localtunnel.server import passing
from localtunnel.transfer.deadlines import Deadlines

pytestmark = [helpers.needs_redis, pytest.mark.deadline(60)]

#: The scripts that run as nobody use only the standard library, and nobody may not read our venv.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin") or sys.executable
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user (CI runs as root)")


@pytest.fixture
def node(make_server, redis_server):
    """A node holding tunnel calm-otter, its 2 sockets connected; (server, client)."""
    server = make_server(redis_url=redis_server.url, node_address="127.0.0.1", lease=1.0)
    client = helpers.FakeClient(new_tunnel(server.port, "calm-otter"), 2, helpers.echo_head_handler)
    helpers.wait_sockets(server.port, "calm-otter", 2)
    yield server
    client.close()


def _as_nobody(script, *args):
    """Run `script` as the user nobody; its stdout. (An argument cannot hold the NUL that
    begins an abstract socket's name: the scripts add it.)"""
    result = subprocess.run([SYSTEM_PYTHON, "-c", textwrap.dedent(script), *args], user="nobody", cwd="/",
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _send(channel, message, fds):
    channel.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


def _door_of(server):
    return passing.door_name(server.registry.names.node_id)


@as_root
def test_another_users_process_cannot_hand_in_a_visitor(node):
    """The door is an abstract socket, which any local process can reach. A process of another
    user that hands in a connection naming a forged visitor is refused: nothing is served on it."""
    listener = socket.create_server(("127.0.0.1", 0))
    out = _as_nobody("""
        import array, socket, sys
        tcp = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel.connect("\\0" + sys.argv[1])
        message = b"2 198.51.100.66\\nGET /forged HTTP/1.1\\r\\nHost: calm-otter.localhost\\r\\n\\r\\n"
        try:
            channel.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [tcp.fileno()]))])
        except OSError as exc:
            print("refused", exc)
        channel.settimeout(5)
        try:
            print("closed" if channel.recv(10) == b"" else "open")
        except ConnectionResetError:
            print("closed")
        """, _door_of(node)[1:], str(listener.getsockname()[1]))
    assert "closed" in out      # the door hung up on it
    attacked, _ = listener.accept()
    attacked.settimeout(1.0)
    try:
        assert attacked.recv(100) == b""   # the attacker exited; nobody else held its connection
    except socket.timeout:
        pytest.fail("the door kept the connection another user's process handed in")
    finally:
        attacked.close()
        listener.close()
    assert helpers.visit(node.port, "calm-otter", "/after").status_code == 200


def test_messages_that_break_the_format_close_the_channel_and_leak_nothing(node):
    """A message without a descriptor, with two, with a header that is not one, or too long to
    read whole: the door closes that channel and the descriptors it got, and serves on."""
    fds_before = len(os.listdir("/proc/self/fd"))
    spare = [socket.socket() for _ in range(2)]
    for message, fds in ((b"2 127.0.0.1\nGET / HTTP/1.1\r\n\r\n", []),
                         (b"2 127.0.0.1\n", [spare[0].fileno(), spare[1].fileno()]),
                         (b"not a header", [spare[0].fileno()]),
                         (b"1 127.0.0.1\n", [spare[0].fileno()]),       # AF_UNIX: no visitor's
                         (b"2 127.0.0.1\r\nX-Evil: 1\n", [spare[0].fileno()]),
                         (b"2 127.0.0.1\n" + b"x" * (passing.MAX_MESSAGE + 1), [spare[0].fileno()])):
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * passing.MAX_MESSAGE)
        channel.connect(_door_of(node))
        channel.settimeout(5)
        _send(channel, message, fds)
        assert channel.recv(10) == b"", message[:20]    # hung up
        channel.close()
    for sock in spare:
        sock.close()
    helpers.wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds_before, 5,
                       "the door to close every descriptor it was handed")
    assert helpers.visit(node.port, "calm-otter", "/after").status_code == 200


@as_root
def test_a_door_squatted_by_another_user_gets_no_visitor(node):
    """A node that died leaves its door's name free, and its id is in Redis for anyone to read: a
    process of another user that binds the name must get no visitor socket from the other nodes."""
    ready, node_id = "/tmp/lt-squat-%d" % os.getpid(), "feedfacecafe"
    squatter = subprocess.Popen([SYSTEM_PYTHON, "-c", textwrap.dedent("""
        import socket, sys
        door = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        door.bind("\\0" + sys.argv[1])
        door.listen(4)
        open(sys.argv[2], "w").close()
        door.settimeout(10)
        channel, _ = door.accept()
        channel.settimeout(5)
        data, ancdata, _, _ = channel.recvmsg(1024, socket.CMSG_SPACE(64))
        print("got", len(data), "bytes", len(ancdata), "descriptors")
        """), passing.door_name(node_id)[1:], ready], user="nobody", cwd="/", stdout=subprocess.PIPE,
                                text=True)
    try:
        helpers.wait_until(lambda: os.path.exists(ready), 10, "the squatter to bind the door's name")
        passer = passing.Passer(node.front.limits.deadlines, 2.0)
        with socket.create_connection(("127.0.0.1", node.port)) as visitor:
            assert not passer.pass_over(node_id, visitor, "127.0.0.1", b"GET / HTTP/1.1\r\n\r\n")
        passer.close()
        out, _ = squatter.communicate(timeout=15)
        assert out.strip() == "got 0 bytes 0 descriptors"
    finally:
        squatter.kill()
        if os.path.exists(ready):
            os.remove(ready)


def test_a_node_that_stops_reading_its_door_holds_a_visitor_one_bound_at_most(node):
    """A door that accepts nothing and reads nothing: its channel fills, and every visitor
    handed to it at once is either queued there or refused (to be spliced instead) within one
    bound, never left waiting on the ones ahead of it."""
    node_id = "deadd00r%04d" % (os.getpid() % 10000)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stuck.bind(passing.door_name(node_id))
    stuck.listen(4)
    passer = passing.Passer(Deadlines(0.02), 0.5)      # a fine tick: the bound is 0.5-0.52 s
    visitor = socket.create_connection(("127.0.0.1", node.port))
    try:
        data = b"x" * (200 * 1024)
        started = time.monotonic()
        visitors = [gevent.spawn(passer.pass_over, node_id, visitor, "127.0.0.1", data) for _ in range(60)]
        gevent.joinall(visitors, timeout=5)
        took = time.monotonic() - started
        results = [one.value for one in visitors]
        assert True in results and False in results, results   # some fitted, the rest were refused
        assert took < 0.8, "a visitor waited %.2f s, past its bound" % took
    finally:
        passer.close()
        visitor.close()
        stuck.close()
