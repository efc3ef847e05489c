"""Several servers sharing one registry in a real redis-server (issue 14), as far as it is built:
names unique across nodes, `ip` in the creation answer, names freed when their tunnel ends, the
settings, a registry that goes away and comes back, and visitors at a node that does not hold
their tunnel, passed on to the one that does."""
import hashlib
import os
import random
import re
import signal
import socket
import sys
import time

import gevent
import pytest
import requests

import helpers
from helpers import new_tunnel
from localtunnel.server import config
from localtunnel.server.cluster import RegistryUnreachable

pytestmark = helpers.needs_redis


@pytest.fixture
def cluster(make_server, redis_server):
    def node(**overrides):
        return make_server(redis_url=redis_server.url, node_address="127.0.0.1", lease=1.0, **overrides)
    return node


def test_a_name_held_on_one_node_is_not_given_on_another(cluster):
    a, b = cluster(), cluster()
    first = new_tunnel(a.port, "calm-otter")
    assert first["id"] == "calm-otter" and first["ip"] == "127.0.0.1"
    # Another client, at another node: the reference server's answer to a taken name.
    second = helpers.get_from("127.0.0.2", "http://127.0.0.1:%d/calm-otter" % b.port).json()
    assert second["id"] != "calm-otter"
    # Its own client, at another node while A still holds it: come back when A lets go or lapses.
    again = requests.get("http://127.0.0.1:%d/calm-otter" % b.port, headers={"Host": "localhost"})
    assert again.status_code == 503 and int(again.headers["Retry-After"]) >= 1
    # Its own client at the node that holds it takes it back at once (PROTOCOL.md B7).
    assert new_tunnel(a.port, "calm-otter")["id"] == "calm-otter"


def test_a_name_is_free_for_every_node_once_its_tunnel_ends(cluster):
    a, b = cluster(connect_grace=0.3), cluster()
    assert new_tunnel(a.port, "calm-otter")["id"] == "calm-otter"
    # No client connects: the tunnel ends after its connect grace, and its name with it.
    helpers.wait_until(lambda: a.registry.get("calm-otter") is None, 5, "the unused tunnel to end")
    assert new_tunnel(b.port, "calm-otter")["id"] == "calm-otter"


def test_a_server_alone_says_nothing_of_ip(make_server):
    assert "ip" not in new_tunnel(make_server().port)


def test_redis_needs_a_node_address_when_listening_on_a_wildcard():
    with pytest.raises(config.ConfigError) as info:
        config.from_sources({"LT_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert "--node-address" in str(info.value) and "0.0.0.0" in str(info.value)
    settings = config.from_sources({"LT_REDIS_URL": "redis://127.0.0.1:6379/0", "LT_ADDRESS": "10.1.2.3"})
    assert settings.node_address == "10.1.2.3" and settings.lease == 10.0
    with pytest.raises(config.ConfigError):
        config.from_sources({}, {"redis_url": "http://127.0.0.1:6379"})


def test_without_redis_new_tunnels_wait_and_held_ones_serve(cluster, redis_server):
    a = cluster()
    info = new_tunnel(a.port, "calm-otter")
    client = helpers.FakeClient(info, 2)
    helpers.wait_sockets(a.port, "calm-otter", 2)
    redis_server.stop()
    answer = requests.get("http://127.0.0.1:%d/brave-fox" % a.port, headers={"Host": "localhost:%d" % a.port})
    assert answer.status_code == 503 and "registry (Redis) is unreachable" in answer.json()["message"]
    assert helpers.visit(a.port, "calm-otter").status_code == 200     # the tunnel it holds serves on
    elsewhere = helpers.visit(a.port, "held-elsewhere")                 # who holds it? Redis cannot say
    assert elsewhere.status_code == 503 and elsewhere.headers["X-Localtunnel-Status"] == "registry-unreachable"
    redis_server.start()
    # The restarted Redis is empty. The renewal tick (a third of the lease) finds it again and
    # claims the name the node still serves; new tunnels are given again.
    names = a.registry.names
    helpers.wait_until(lambda: _owner(names, "calm-otter") == (names.node_id, "127.0.0.1", a.front.internal_port), 5,
                       "the node to claim its tunnel's name again")
    assert new_tunnel(a.port, "brave-fox")["id"] == "brave-fox"
    assert helpers.visit(a.port, "calm-otter").status_code == 200
    client.close()


def _owner(names, name):
    try:
        return names.owner(name)
    except RegistryUnreachable:     # while redis-server is still starting
        return None


# --- visitors at a node that does not hold the tunnel -----------------------------------------

@pytest.mark.node
@pytest.mark.deadline(90)
@pytest.mark.parametrize("kind, pass_sockets", [("python", True), ("node", True), ("python", False)],
                         ids=["python-socket-passed", "node-socket-passed", "python-spliced"])
def test_visitors_at_any_node_reach_a_tunnel_held_by_another(cluster, procs, origin, kind, pass_sockets):
    a, b = cluster(pass_sockets=pass_sockets), cluster(pass_sockets=pass_sockets)
    _, url = helpers.start_client(kind, procs, a.port, origin)    # the client follows `ip` to A
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(a.port, name, 10)
    # Through B, from another address: the origin sees the visitor's address, not B's.
    with helpers.session_from("127.0.0.2") as session:
        answer = helpers.visit(b.port, name, "/headers", session=session)
        assert answer.status_code == 200
        assert answer.json()["headers"]["x-forwarded-for"].split(",")[0].strip() == "127.0.0.2"
        for _ in range(20):
            assert helpers.visit(b.port, name, "/headers", session=session).status_code == 200
    # 64 MiB each way, byte-exact, and a WebSocket echo.
    size = 64 * 1024 * 1024
    got, digest = helpers.streamed_digest(helpers.visit(b.port, name, "/bytes?n=%d" % size, stream=True))
    assert got == size and digest == helpers.pattern_digest(size)
    # Up: the origin's digest of the body, since a streamed echo of 64 MiB to a visitor that
    # reads only once it has sent everything needs 64 MiB of buffers on the way, or it stalls.
    body = os.urandom(size)
    answer = helpers.visit(b.port, name, "/digest", method="POST", data=body, timeout=60)
    assert answer.json() == {"bytes": size, "sha256": hashlib.sha256(body).hexdigest()}
    sock = helpers.ws_connect(b.port, "%s.localhost:%d" % (name, b.port))
    try:
        for payload in (b"hi", os.urandom(70000)):
            helpers.ws_send(sock, payload)
            assert helpers.ws_recv(sock) == (2, payload)
    finally:
        sock.close()
    assert b.metrics.handed_over >= 4 and (b.metrics.sockets_passed == b.metrics.handed_over) == pass_sockets


def test_a_name_no_node_holds_is_404_and_an_ended_tunnel_is_noticed_within_a_lease(cluster):
    a, b = cluster(connect_grace=0.5), cluster()
    assert helpers.visit(b.port, "nobody-here").status_code == 404
    info = new_tunnel(a.port, "calm-otter")
    client = helpers.FakeClient(info, 2)
    helpers.wait_sockets(a.port, "calm-otter", 2)
    assert helpers.visit(b.port, "calm-otter").text == "GET / HTTP/1.1"    # passed on to A
    client.close()      # the client goes; after its grace the tunnel and its name end
    helpers.wait_until(lambda: helpers.visit(b.port, "calm-otter").status_code == 404, 5,
                       "node B to notice the tunnel has gone")


def _labelled(label):
    """A FakeClient handler answering 200 with `label` and the whole request head."""
    def handler(sock, head):
        body = label + b" " + head
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return handler


def _exchange(sock, request):
    """Send one request on a kept-alive connection; (status, body) of its answer."""
    sock.sendall(request)
    head = helpers.read_request_head(sock)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return helpers.status_of(head), body


@pytest.mark.parametrize("pass_sockets", [True, False], ids=["socket-passed", "spliced"])
def test_a_handed_over_connection_follows_each_request_to_its_tunnel(cluster, pass_sockets):
    """B hands a visitor's connection to A for its first request; a later request on it for a
    tunnel B holds goes back to B, one request passed on, never round in a circle. Nodes of one
    process are nodes of one machine: with --pass-sockets (the default) the socket itself goes to
    A; without, as between machines, B splices it to A's internal port."""
    a, b = cluster(pass_sockets=pass_sockets), cluster(pass_sockets=pass_sockets)
    at_a = helpers.FakeClient(new_tunnel(a.port, "calm-otter"), 2, _labelled(b"A"))
    at_b = helpers.FakeClient(new_tunnel(b.port, "brave-fox"), 2, _labelled(b"B"))
    helpers.wait_sockets(a.port, "calm-otter", 2)
    helpers.wait_sockets(b.port, "brave-fox", 2)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5, source_address=("127.0.0.2", 0)) as sock:
        for name, label in (("calm-otter", b"A"), ("brave-fox", b"B"), ("calm-otter", b"A")):
            status, body = _exchange(sock, b"GET /%s HTTP/1.1\r\nHost: %s.localhost\r\n\r\n" % (
                name.encode(), name.encode()))
            assert status == 200 and body.startswith(label + b" GET /" + name.encode()), body
            assert b"X-Forwarded-For: 127.0.0.2" in body     # the visitor first, then any node's hop
    assert b.metrics.handed_over == 1 and a.metrics.handed_over == 0
    assert b.metrics.sockets_passed == (1 if pass_sockets else 0)
    # A connection that ends with its request is passed on, not handed over, either way (a
    # passed socket would cost the owner a connection's setup and teardown): the hop shows, B
    # named the visitor and A added B.
    closing = helpers.raw_exchange(b.port, b"GET /last HTTP/1.1\r\nHost: calm-otter.localhost\r\nConnection: close\r\n\r\n")
    assert helpers.status_of(closing) == 200 and b"A GET /last" in closing
    assert b"X-Forwarded-For: 127.0.0.1, 127.0.0.1\r\n" in closing and b.metrics.handed_over == 1
    at_a.close()
    at_b.close()


@pytest.mark.parametrize("pass_sockets", [True, False], ids=["socket-passed", "spliced"])
def test_a_balancers_visitor_keeps_its_address_through_a_hand_over(cluster, pass_sockets):
    """Behind an L4 balancer with send-proxy, B learns the visitor from the PROXY line; handing
    the connection to A must name that visitor, not the balancer B's socket comes from."""
    a, b = cluster(pass_sockets=pass_sockets), cluster(pass_sockets=pass_sockets)
    client = helpers.FakeClient(new_tunnel(a.port, "calm-otter"), 2, _labelled(b"A"))
    helpers.wait_sockets(a.port, "calm-otter", 2)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as sock:   # 127.0.0.1: a trusted proxy
        sock.sendall(b"PROXY TCP4 198.51.100.9 127.0.0.1 41000 80\r\n")
        for number in range(2):
            status, body = _exchange(sock, b"GET /%d HTTP/1.1\r\nHost: calm-otter.localhost\r\n\r\n" % number)
            assert status == 200 and b"X-Forwarded-For: 198.51.100.9\r\n" in body, body
    assert b.metrics.handed_over == 1 and b.metrics.sockets_passed == (1 if pass_sockets else 0)
    client.close()


def test_a_node_of_another_machine_is_spliced_to(cluster):
    """A node whose socket door B cannot find (another machine, or --pass-sockets off there) gets
    its visitors spliced to its internal port, and `Connection: close` ones passed on."""
    a, b = cluster(pass_sockets=False), cluster(pass_sockets=True)
    client = helpers.FakeClient(new_tunnel(a.port, "calm-otter"), 2, _labelled(b"A"))
    helpers.wait_sockets(a.port, "calm-otter", 2)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5, source_address=("127.0.0.2", 0)) as sock:
        for number in range(3):
            status, body = _exchange(sock, b"GET /%d HTTP/1.1\r\nHost: calm-otter.localhost\r\n\r\n" % number)
            assert status == 200 and b"X-Forwarded-For: 127.0.0.2\r\n" in body
    closing = helpers.raw_exchange(b.port, b"GET /last HTTP/1.1\r\nHost: calm-otter.localhost\r\nConnection: close\r\n\r\n")
    assert helpers.status_of(closing) == 200 and b"X-Forwarded-For: 127.0.0.1, 127.0.0.1\r\n" in closing
    assert b.metrics.handed_over == 1 and b.metrics.sockets_passed == 0
    client.close()


def _introduce(port, source_ip, first_line):
    """A connection from `source_ip` to a node's internal port that begins with `first_line`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source_ip, 0))
    with sock:
        sock.sendall(first_line + b"GET / HTTP/1.1\r\nHost: calm-otter.localhost\r\nConnection: close\r\n\r\n")
        return helpers.read_all(sock)


def test_only_a_node_may_say_whose_connection_it_hands_over(cluster):
    """A PROXY line names any address it likes, so only a live node is believed; anyone else
    reaching the internal port is refused, and a malformed line is a 400."""
    a = cluster()
    client = helpers.FakeClient(new_tunnel(a.port, "calm-otter"), 2, _labelled(b"A"))
    helpers.wait_sockets(a.port, "calm-otter", 2)
    line = b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n"
    from_node = _introduce(a.front.internal_port, "127.0.0.1", line)
    assert helpers.status_of(from_node) == 200 and b"X-Forwarded-For: 198.51.100.7\r\n" in from_node
    forged = _introduce(a.front.internal_port, "127.0.0.2", line)
    assert helpers.status_of(forged) == 403 and b"X-Localtunnel-Status: not-a-node" in forged
    assert helpers.status_of(_introduce(a.front.internal_port, "127.0.0.1", b"PROXY TCP4 nonsense\r\n")) == 400
    # Without a PROXY line the internal port serves whoever connects, as the public one does.
    plain = _introduce(a.front.internal_port, "127.0.0.2", b"")
    assert helpers.status_of(plain) == 200 and b"X-Forwarded-For: 127.0.0.2\r\n" in plain
    client.close()


def test_status_answers_for_the_cluster_from_any_node(cluster):
    a, b = cluster(), cluster()
    info = new_tunnel(a.port, "calm-otter")
    client = helpers.FakeClient(info, 2)
    helpers.wait_sockets(a.port, "calm-otter", 2)
    # Asked at B, answered by A, which holds it.
    assert helpers.api_get(b.port, "/api/tunnels/calm-otter/status") == {"connected_sockets": 2}
    missing = requests.get("http://127.0.0.1:%d/api/tunnels/nobody-here/status" % b.port,
                           headers={"Host": "localhost:%d" % b.port})
    assert missing.status_code == 404
    status = helpers.api_get(b.port, "/api/status")
    assert status["tunnels"] == 0 and status["node"] == b.registry.names.node_id
    assert status["cluster"] == {"nodes": 2, "tunnels": 1}
    client.close()


def test_a_server_alone_says_nothing_of_a_cluster(make_server):
    status = helpers.api_get(make_server().port, "/api/status")
    assert "cluster" not in status and "node" not in status


@pytest.mark.deadline(60)
def test_gunicorn_workers_are_nodes_sharing_the_public_port(procs, redis_server):
    port = helpers.free_port()
    env = {"LT_PORT": str(port), "LT_ADDRESS": "127.0.0.1", "LT_DOMAIN": "localhost",
           "LT_REDIS_URL": redis_server.url, "LT_LEASE": "2"}
    procs([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "-b", "127.0.0.1:0", "lt_server:app"],
          env=env)
    helpers.wait_listening(port)
    helpers.wait_until(lambda: (helpers.api_get(port, "/api/status")["cluster"] or {}).get("nodes") == 2, 20,
                       "both workers to join the cluster")
    clients = []
    names = []
    for _ in range(4):
        info = new_tunnel(port)     # each lands on whichever worker the kernel picks
        clients.append(helpers.FakeClient(info, 2))
        names.append(info["id"])
    for name in names:
        helpers.wait_sockets(port, name, 2)
    with requests.Session() as session:
        for number in range(200):
            name = names[number % 4]
            answer = helpers.visit(port, name, "/n%d" % number, session=session, timeout=10)
            assert answer.status_code == 200 and answer.text == "GET /n%d HTTP/1.1" % number, answer.text
    # Kept-alive visitors that the kernel gives the other worker have their sockets passed to the
    # owner, never spliced: the workers are nodes of one machine.
    for number in range(20):
        with requests.Session() as session:
            for again in range(2):
                answer = helpers.visit(port, names[0], "/k%d-%d" % (number, again), session=session, timeout=10)
                assert answer.status_code == 200
    handed = {}
    for _ in range(40):     # each scrape reaches whichever worker the kernel picks
        text = requests.get("http://127.0.0.1:%d/metrics" % port, headers={"Host": "localhost"}, timeout=5).text
        for match in re.finditer(r'^localtunnel_handed_over_connections_total\{(.*)\} (\S+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            handed[labels["node"], labels["how"]] = float(match.group(2))
    assert len({node for node, _ in handed}) == 2, handed
    assert sum(count for (_, how), count in handed.items() if how == "socket") >= 1, handed
    assert sum(count for (_, how), count in handed.items() if how == "splice") == 0, handed
    for client in clients:
        client.close()


def cluster_process(procs, redis_server, lease):
    port = helpers.free_port()
    proc = procs([sys.executable, "lt_server.py", "--port", str(port), "--address", "127.0.0.1", "-d", "localhost",
                  "--redis", redis_server.url, "--lease", str(lease), "--log-level", "warning"])
    helpers.wait_listening(port)
    return proc, port


@pytest.mark.node
@pytest.mark.deadline(60)
@pytest.mark.parametrize("kind", ["python", "node"])
def test_a_node_killed_its_clients_get_their_names_back_on_another(procs, redis_server, origin, kind):
    lease = 1.0
    node_a, port_a = cluster_process(procs, redis_server, lease)
    _, port_b = cluster_process(procs, redis_server, lease)
    balancer = helpers.FailoverBalancer([port_a, port_b])
    supervisor = None
    try:
        if kind == "python":
            helpers.start_client(kind, procs, balancer.port, origin, subdomain="calm-otter")
        else:
            # npm lt 2.0.2 never asks the server again: when its tunnel port refuses, it throws
            # and exits. Users run it under a supervisor (systemd Restart=, a shell loop), so do we.
            supervisor = gevent.spawn(_keep_running, procs, helpers.node_client_argv(
                balancer.port, origin, "calm-otter"))
        helpers.wait_sockets(port_a, "calm-otter", 10)
        assert helpers.visit(balancer.port, "calm-otter", "/headers").status_code == 200
        node_a.signal(signal.SIGKILL)
        killed = time.monotonic()
        # Meanwhile visitors get an answer (502 from B while A's lease runs, then 404), never a
        # hang. Only a connection the balancer handed to A as it died may be cut without one:
        # that request was in flight on the dead node.
        answers, cut = set(), []

        def served_again():
            try:
                status = helpers.visit(balancer.port, "calm-otter", "/headers", timeout=5).status_code
            except requests.ConnectionError:
                cut.append(time.monotonic() - killed)
                return False
            answers.add(status)
            return status == 200

        helpers.wait_until(served_again, 30, "the tunnel to be served again through node B")
        back_after = time.monotonic() - killed
        assert answers <= {200, 404, 502}, answers
        assert all(when < 0.5 for when in cut), cut
        assert helpers.api_get(port_b, "/api/tunnels/calm-otter/status")["connected_sockets"] >= 1
    finally:
        balancer.stop()
        if supervisor is not None:
            supervisor.kill()
    # The name came back within the lease plus the client's backoff (generous on a busy machine).
    assert back_after < lease + 10, back_after


def _keep_running(procs, argv):
    """`while true; do lt ...; done`: start it again whenever it exits."""
    while True:
        proc = procs(argv)
        while proc.popen.poll() is None:
            gevent.sleep(0.1)


def test_every_metric_of_a_node_says_which_node(cluster):
    a = cluster()
    text = requests.get("http://127.0.0.1:%d/metrics" % a.port, headers={"Host": "localhost"}).text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all('node="%s"' % a.registry.names.node_id in line for line in samples), text


def test_a_burst_of_visitors_for_one_name_costs_one_lookup():
    from localtunnel.server.cluster import Node
    from localtunnel.server.peers import Peers

    class SlowNames:
        node_id, lease, calls = "me", 10.0, 0

        def owner(self, name):
            SlowNames.calls += 1
            gevent.sleep(0.05)      # a Redis round trip
            return Node("other", "127.0.0.1", 1)

    peers = Peers(SlowNames(), config.Settings(pass_sockets=False), None)
    askers = [gevent.spawn(peers.owner, "calm-otter") for _ in range(50)]
    gevent.joinall(askers, raise_error=True)
    assert SlowNames.calls == 1 and {asker.value for asker in askers} == {("other", "127.0.0.1", 1)}


def test_node_port_fixes_the_internal_port_and_each_worker_takes_the_next(cluster):
    """A firewall between nodes can allow exactly --node-port's range: the first node takes the
    port, the next one on the machine (a second gunicorn worker) the one after."""
    from localtunnel.server.listeners import NODE_PORTS
    held = _hold_ports(2)       # two free ports in a row (other tests' connections take ports too)
    base = held[0].getsockname()[1]
    for sock in held:
        sock.close()
    first, second = cluster(node_port=base), cluster(node_port=base)
    assert first.front.internal_port == base
    assert base < second.front.internal_port < base + NODE_PORTS     # base + 1 unless just taken
    client = helpers.FakeClient(new_tunnel(first.port, "calm-otter"), 2)
    helpers.wait_sockets(first.port, "calm-otter", 2)
    assert helpers.visit(second.port, "calm-otter").text == "GET / HTTP/1.1"     # handed over to `base`
    client.close()


def test_a_node_port_range_all_taken_is_a_one_line_error(cluster):
    from localtunnel.server import listeners
    held = _hold_ports(listeners.NODE_PORTS)
    try:
        with pytest.raises(listeners.BindError) as info:
            cluster(node_port=held[0].getsockname()[1])
        assert "--node-port" in str(info.value) and "in use" in str(info.value)
    finally:
        for sock in held:
            sock.close()


def _hold_ports(count):
    """`count` consecutive loopback ports, listening (so nothing else can listen there), below
    the ephemeral range: the suite's connections leave ports there in TIME_WAIT. A range another
    program holds part of is given up and another tried."""
    rng = random.Random()
    for _ in range(50):
        base, held = rng.randrange(20000, 30000 - count), []
        for port in range(base, base + count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as the server binds
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                sock.close()
                break
            held.append(sock)
        if len(held) == count:
            return held
        for sock in held:
            sock.close()
    raise AssertionError("found no %d free consecutive ports" % count)
