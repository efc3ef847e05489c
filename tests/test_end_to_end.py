"""End to end against our server, visitors on the front port, the Node origin behind: every case
from the server issue's list, run through the real npm `lt` client (localtunnel 2.0.2) and
through our lt_client.py, both as subprocesses."""
import hashlib
import os
import signal
import socket
import time

import gevent
import gevent.event
import pytest
import requests

import helpers
from helpers import start_client, tunnel_name, visit, wait_sockets

pytestmark = pytest.mark.node


@pytest.fixture(params=["node", "python"])
def kind(request):
    """Which client: the npm `lt` or ours."""
    return request.param


@pytest.fixture
def start_lt(kind, procs):
    def start(server_port, local_port, subdomain=None):
        return start_client(kind, procs, server_port, local_port, subdomain)
    return start


@pytest.fixture
def tunnel(server, origin, start_lt):
    """(server port, tunnel name) with the client connected with all its sockets."""
    _, url = start_lt(server.port, origin)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    return server.port, name


def test_get_through_the_node_client(tunnel):
    port, name = tunnel
    answer = visit(port, name, "/hello")
    assert answer.status_code == 200 and answer.text == "hello"


def test_url_names_the_tunnel_on_the_host_the_client_used(server, origin, start_lt):
    _, url = start_lt(server.port, origin)
    assert url.startswith("http://") and url.endswith(".localhost:%d" % server.port)
    assert len(tunnel_name(url).split("-")) == 3


@pytest.mark.deadline(60)
def test_16_mib_post_is_echoed_exactly(tunnel):
    port, name = tunnel
    body = os.urandom(16 * 1024 * 1024)
    answer = visit(port, name, "/echo", method="POST", data=body)
    assert answer.status_code == 200
    assert len(answer.content) == len(body)
    assert hashlib.sha256(answer.content).digest() == hashlib.sha256(body).digest()


@pytest.mark.deadline(60)
def test_64_mib_download_is_exact(tunnel):
    port, name = tunnel
    size = 64 * 1024 * 1024
    got, digest = helpers.streamed_digest(visit(port, name, "/bytes?n=%d" % size, stream=True))
    assert got == size and digest == helpers.pattern_digest(size)


def test_websocket_echo(tunnel):
    port, name = tunnel
    sock = helpers.ws_connect(port, "%s.localhost:%d" % (name, port))
    try:
        for payload in (b"hi", os.urandom(300), os.urandom(70000)):
            helpers.ws_send(sock, payload)
            assert helpers.ws_recv(sock) == (2, payload)
    finally:
        sock.close()


def test_chunked_stream_arrives_incrementally(tunnel):
    port, name = tunnel
    answer = visit(port, name, "/stream?count=4&ms=300", stream=True)
    assert answer.headers.get("Transfer-Encoding") == "chunked"
    arrivals = []
    start = time.monotonic()
    for line in answer.iter_lines():
        arrivals.append((line, time.monotonic() - start))
    assert [line for line, _ in arrivals] == [b"chunk 0", b"chunk 1", b"chunk 2", b"chunk 3"]
    # The first chunk must not wait for the stream's end (~0.9 s later).
    assert arrivals[0][1] < 0.6 and arrivals[-1][1] > 0.8


@pytest.mark.deadline(60)
def test_100_concurrent_requests(tunnel):
    port, name = tunnel
    jobs = [gevent.spawn(visit, port, name, "/headers?i=%d" % i) for i in range(100)]
    gevent.joinall(jobs, raise_error=True)
    answers = [job.value for job in jobs]
    assert [a.status_code for a in answers] == [200] * 100
    assert sorted(a.json()["url"] for a in answers) == sorted("/headers?i=%d" % i for i in range(100))


def origin_connections(origin):
    return requests.get("http://127.0.0.1:%d/stats" % origin).json()["connections"]


@pytest.mark.deadline(60)
def test_50_keep_alive_visitors_share_a_10_socket_tunnel(tunnel, origin):
    port, name = tunnel
    first_round = gevent.event.Event()
    done_first = []
    before = origin_connections(origin)

    def visitor(i):
        session = requests.Session()    # one keep-alive connection per visitor
        try:
            codes = [visit(port, name, "/headers?v=%d" % i, session=session).status_code]
            done_first.append(i)
            if len(done_first) == 50:
                first_round.set()
            # Every visitor connection stays open until all 50 have been served once: with a
            # tunnel socket held per visitor connection (the Node server's way), 40 would wait.
            first_round.wait()
            codes += [visit(port, name, "/headers?v=%d&r=%d" % (i, r), session=session).status_code
                      for r in range(4)]
            return codes
        finally:
            session.close()

    sessions = [gevent.spawn(visitor, i) for i in range(50)]
    gevent.joinall(sessions, raise_error=True)
    assert [s.value for s in sessions] == [[200] * 5] * 50
    status = requests.get("http://127.0.0.1:%d/api/tunnels/%s/status" % (port, name)).json()
    assert status["connected_sockets"] <= 10
    # 250 requests, yet the tunnel sockets (and the Node client's local connections behind
    # them) were reused, not replaced per request.
    assert origin_connections(origin) - before < 30


def test_chosen_subdomain(server, origin, start_lt):
    _, url = start_lt(server.port, origin, subdomain="my-demo-app")
    assert url == "http://my-demo-app.localhost:%d" % server.port
    wait_sockets(server.port, "my-demo-app", 1)
    assert visit(server.port, "my-demo-app", "/hello").text == "hello"


def test_rejects_invalid_subdomain_with_403_message(server):
    # Exactly what the Node client sends for `lt --subdomain Bad_Name`.
    answer = requests.get("http://127.0.0.1:%d/Bad_Name" % server.port, headers={
        "Host": "localhost:%d" % server.port, "User-Agent": "axios/0.21.4",
        "Accept": "application/json, text/plain, */*"})
    assert answer.status_code == 403
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert answer.text == ('{"message":"Invalid subdomain. Subdomains must be lowercase and between '
                           '4 and 63 alphanumeric characters."}')


def test_node_client_with_invalid_subdomain_gets_no_tunnel(server, origin, procs):
    proc = procs([helpers.LT, "--host", "http://localhost:%d" % server.port, "--port", str(origin),
                  "--subdomain", "Bad_Name"])
    gevent.sleep(1.5)   # it retries silently every second on any non-2xx answer
    assert "your url is" not in proc.output
    assert len(server.registry) == 0


def test_our_client_with_invalid_subdomain_prints_the_403_message_and_exits_2(server, origin, procs):
    proc = procs(helpers.our_client_argv(server.port, origin, "Bad_Name"))
    assert proc.wait(10) == 2
    assert proc.output.strip() == ("lt-client: Invalid subdomain. Subdomains must be lowercase and "
                                   "between 4 and 63 alphanumeric characters.")


@pytest.mark.deadline(30)
def test_client_exit_frees_the_name(make_server, origin, start_lt, kind):
    server = make_server(grace=1.0)
    proc, _ = start_lt(server.port, origin, subdomain="freed-name")
    wait_sockets(server.port, "freed-name", 10)
    proc.signal(signal.SIGINT)
    status = proc.wait(10)
    if kind == "python":    # the npm client just dies of the signal
        assert status == 130 and "Traceback" not in proc.output
    status_url = "http://127.0.0.1:%d/api/tunnels/freed-name/status" % server.port
    with gevent.Timeout(5, AssertionError("the name was not freed after the grace period")):
        while requests.get(status_url).status_code != 404:
            gevent.sleep(0.1)
    answer = visit(server.port, "freed-name", "/hello")
    assert answer.status_code == 404 and answer.headers["X-Localtunnel-Status"] == "no-such-tunnel"
    # And the next client asking for it gets it.
    _, url = start_lt(server.port, origin, subdomain="freed-name")
    assert tunnel_name(url) == "freed-name"


def test_expect_100_continue_passes_through(tunnel):
    """The visitor waits for 100 Continue before sending its body, as curl does."""
    port, name = tunnel
    body = b"x" * 5000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: %s.localhost\r\nContent-Length: %d\r\n"
                     b"Expect: 100-continue\r\n\r\n" % (name.encode(), len(body)))
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        answer = b""
        while not answer.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, answer
            answer += data
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.count(b"x") == len(body)


def test_head_request_has_no_body_and_the_connection_carries_on(tunnel):
    port, name = tunnel
    with requests.Session() as session:
        head = visit(port, name, "/bytes?n=5000", method="HEAD", session=session)
        assert head.status_code == 200 and head.headers["Content-Length"] == "5000" and head.content == b""
        assert visit(port, name, "/hello", session=session).text == "hello"
