"""Our client, lt_client.py: what it promises beyond the shared end-to-end cases, against our
server and against a fake server written from PROTOCOL.md A1 (the Node server's answers)."""
import json
import os
import re
import signal
import sys

import gevent
import gevent.queue
import pytest
import requests
from gevent.server import StreamServer

import helpers
from helpers import our_client_argv, start_client, tunnel_name, visit, wait_sockets

pytestmark = pytest.mark.node


def start_origin(procs, port=0, keepalive_ms=None):
    argv = ["node", os.path.join(helpers.ROOT, "tests", "node", "origin.js"), str(port)]
    proc = procs(argv + ([str(keepalive_ms)] if keepalive_ms else []))
    return proc, int(proc.wait_for(r"listening (\d+)", 15).group(1))


# --- against our server -----------------------------------------------------------------------

def test_local_host_rewrites_host_on_every_keep_alive_request(server, origin, procs):
    _, url = start_client("python", procs, server.port, origin, extra=["-l", "127.0.0.1"])
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    with requests.Session() as session:     # one keep-alive visitor connection
        hosts = [visit(server.port, name, "/headers", session=session).json()["headers"]["host"]
                 for _ in range(5)]
    assert hosts == ["127.0.0.1"] * 5


def test_print_requests_prints_time_method_path_status_duration(server, origin, procs):
    proc, url = start_client("python", procs, server.port, origin, extra=["--print-requests"])
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    visit(server.port, name, "/hello?x=1")
    visit(server.port, name, "/missing", method="DELETE")
    proc.wait_for(r"DELETE /missing 404", 5)
    lines = [line for line in proc.output.splitlines() if not line.startswith(("your url", "inspector:"))]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d GET /hello\?x=1 200 \d+ ms", lines[0])
    assert re.fullmatch(r"\S+ DELETE /missing 404 \d+ ms", lines[1])


@pytest.mark.deadline(40)
def test_local_service_down_or_stopped_is_a_502_naming_it_then_recovers(server, procs):
    local_port = helpers.free_port()
    _, url = start_client("python", procs, server.port, local_port)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    answer = visit(server.port, name, "/hello")
    assert answer.status_code == 502
    assert answer.headers["X-Localtunnel-Status"] == "local-unreachable"
    assert "localhost:%d" % local_port in answer.text and "not" in answer.text.lower()
    local, _ = start_origin(procs, local_port)
    session = requests.Session()    # keep-alive: the next requests reuse one local connection
    for _ in range(3):
        answer = visit(server.port, name, "/hello", session=session)
        assert answer.status_code == 200 and answer.text == "hello"
    local.stop()        # the service stops while the tunnel is in use, and starts again
    answer = visit(server.port, name, "/hello", session=session)
    assert answer.status_code == 502 and answer.headers["X-Localtunnel-Status"] == "local-unreachable"
    start_origin(procs, local_port)
    answer = visit(server.port, name, "/hello", session=session)
    assert answer.status_code == 200 and answer.text == "hello"


@pytest.mark.deadline(40)
def test_local_idle_timeout_never_loses_or_mixes_up_a_response(server, procs):
    _, origin = start_origin(procs, keepalive_ms=200)
    _, url = start_client("python", procs, server.port, origin)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    for i in range(8):
        answer = visit(server.port, name, "/headers?i=%d" % i)
        assert answer.status_code == 200 and answer.json()["url"] == "/headers?i=%d" % i
        gevent.sleep(0.25)      # longer than the origin keeps an idle connection


def test_a_websocket_whose_visitor_vanishes_gives_its_tunnel_socket_back(make_server, origin, procs):
    # Node's upgraded sockets allow half-open connections, so the origin never closes its side
    # after ours ends; the client must not wait for it for ever, or each abandoned WebSocket
    # would cost the tunnel a socket.
    server = make_server(splice_idle_timeout=0.5)
    _, url = start_client("python", procs, server.port, origin)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    for _ in range(3):
        sock = helpers.ws_connect(server.port, "%s.localhost" % name)
        helpers.ws_send(sock, b"hi")
        assert helpers.ws_recv(sock) == (2, b"hi")
        sock.close()
    tunnel = server.registry.get(name)
    with gevent.Timeout(3, AssertionError("the server never closed the abandoned splices")):
        while tunnel.connected_sockets == 10:
            gevent.sleep(0.05)
    wait_sockets(server.port, name, 10, timeout=10)


@pytest.mark.deadline(60)
def test_server_killed_and_restarted_on_the_same_port_serves_the_same_url(procs, origin):
    port = helpers.free_port()
    server_argv = [sys.executable, "lt_server.py", "-p", str(port), "--address", "127.0.0.1", "-d", "localhost"]
    server = procs(server_argv)
    server.wait_for(r"listening on", 15)
    client, url = start_client("python", procs, port, origin)
    name = tunnel_name(url)
    wait_sockets(port, name, 10)
    server.signal(signal.SIGKILL)
    server.wait(5)
    procs(server_argv).wait_for(r"listening on", 15)
    client.wait_for(r"connection lost, reconnecting\n(?:.*\n)*your url is: %s\n" % re.escape(url), 30)
    wait_sockets(port, name, 10)
    assert visit(port, name, "/hello").text == "hello"
    assert client.output.count("connection lost, reconnecting") == 1
    assert "Traceback" not in client.output


def test_sigterm_closes_the_sockets_and_exits_0(server, origin, procs):
    proc, url = start_client("python", procs, server.port, origin)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    proc.signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert "Traceback" not in proc.output
    with gevent.Timeout(3, AssertionError("tunnel sockets still open")):
        while server.registry.get(name) and server.registry.get(name).connected_sockets:
            gevent.sleep(0.05)


@pytest.mark.parametrize("argv, says", [
    ([], "--port is required: the port of the local service to expose"),
    (["-p", "0"], "--port=0: expected the local service's port, 1 to 65535"),
    (["-p", "80", "-h", "ftp://x"], "--host=ftp://x: expected a server URL such as https://localtunnel.me"),
    (["-p", "80", "--bogus"], "unknown or repeated option or argument: --bogus"),
    (["-p", "80", "--local-https", "--local-ca", "/nonexistent"], "--local-cert/--local-key/--local-ca: cannot load"),
    (["-p", "80", "--auth-token", "tök en"], "--auth-token: expected the server's token, printable ASCII without spaces"),
    (["-p", "80", "-h", "http://localhost:port"], "--host=http://localhost:port: expected a server URL"),
])
def test_bad_command_line_is_one_line_and_status_2(procs, argv, says):
    proc = procs([sys.executable, "lt_client.py", *argv])
    assert proc.wait(10) == 2
    assert proc.output.startswith("lt-client: " + says) and len(proc.output.strip().splitlines()) == 1


def test_help_documents_the_npm_flags(procs):
    proc = procs([sys.executable, "lt_client.py", "--help"])
    assert proc.wait(10) == 0
    for flag in ("--port", "--host", "--subdomain", "--local-host", "--local-https", "--local-cert",
                 "--local-key", "--local-ca", "--allow-invalid-cert", "--open", "--print-requests"):
        assert flag in proc.output


# --- against a fake server written from the contract ------------------------------------------

class FakeServer:
    """The Node server as PROTOCOL.md A1/A4 describes it, with knobs for its quirks."""

    def __init__(self, tunnel_address="127.0.0.1", accept=10, close_after_response=False, **extra):
        self.extra, self.accept = extra, accept
        self.close_after_response = close_after_response
        self.sockets = gevent.queue.Queue()
        self.live = set()       # tunnel sockets it holds, in use or not
        self.attempts = 0
        self.tunnel = StreamServer((tunnel_address, 0), self._tunnel_socket)
        self.tunnel.start()
        self.api = StreamServer(("127.0.0.1", 0), self._api)
        self.api.start()
        self.asked = []

    def _api(self, sock, _addr):
        head = helpers.read_request_head(sock)
        path = head.split(b" ")[1].decode()
        self.asked.append(path)
        name = "fake-tunnel-1" if path == "/?new" else self.extra.pop("give", path[1:])
        info = {"id": name, "port": self.tunnel.server_port, "max_conn_count": 10,
                "url": "http://%s.fake.test" % name}
        info.update(self.extra)
        body = json.dumps(info, separators=(",", ":")).encode()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))

    def _tunnel_socket(self, sock, _addr):
        self.attempts += 1
        if len(self.live) >= self.accept:
            return      # more than it takes: closed at once
        self.live.add(sock)
        self.sockets.put(sock)
        gevent.sleep(30)    # parked: the handler owns the socket

    def send(self, raw_request):
        """Send a request on some tunnel socket, return (raw response, socket)."""
        sock = self.sockets.get(timeout=5)
        sock.sendall(raw_request)
        head = helpers.read_request_head(sock)
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        body = b""
        while len(body) < length:
            body += sock.recv(65536)
        if self.close_after_response:
            self.live.discard(sock)
            sock.close()
        else:
            self.sockets.put(sock)
        return head + body

    def stop(self):
        self.api.stop(timeout=0)
        self.tunnel.stop(timeout=0)


@pytest.fixture
def fake_server():
    made = []

    def make(**kwargs):
        made.append(FakeServer(**kwargs))
        return made[-1]

    yield make
    for fake in made:
        fake.stop()


def start_against(fake, procs, origin, subdomain=None):
    proc = procs(our_client_argv(fake.api.server_port, origin, subdomain))
    proc.wait_for(r"your url is: ", 10)
    return proc


GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: fake-tunnel-1.fake.test\r\n\r\n"


def test_prints_url_and_cached_url_from_the_contract_answer(fake_server, procs, origin):
    fake = fake_server(cached_url="http://cached.example.org")
    proc = start_against(fake, procs, origin)
    proc.wait_for(r"your cachedUrl is: http://cached.example.org\n", 5)
    assert proc.output.startswith("your url is: http://fake-tunnel-1.fake.test\n")
    assert fake.asked == ["/?new"]
    assert fake.send(GET_HELLO).endswith(b"hello")


def test_uses_the_ip_field_for_tunnel_sockets(fake_server, procs, origin):
    # The tunnel port listens on 127.0.0.3 only: the API host (127.0.0.1) would refuse.
    fake = fake_server(tunnel_address="127.0.0.3", ip="127.0.0.3")
    start_against(fake, procs, origin)
    assert fake.send(GET_HELLO).endswith(b"hello")


def test_says_so_when_the_server_gives_another_name(fake_server, procs, origin):
    fake = fake_server(give="someone-else")
    proc = start_against(fake, procs, origin, subdomain="wanted-name")
    proc.wait_for(r"wanted-name is taken; the server gave someone-else instead", 5)


@pytest.mark.deadline(20)
def test_server_that_takes_fewer_sockets_than_advertised_is_not_hammered(fake_server, procs, origin):
    fake = fake_server(accept=3)
    start_against(fake, procs, origin)
    gevent.sleep(3)
    # 7 slots whose sockets are closed at once back off from 0.5 s: a handful of tries each,
    # where reconnecting at once (as the npm client does) would make thousands.
    assert 10 <= fake.attempts < 60
    for _ in range(5):
        assert fake.send(GET_HELLO).endswith(b"hello")


def test_server_that_closes_tunnel_sockets_after_each_response(fake_server, procs, origin):
    fake = fake_server(close_after_response=True)
    start_against(fake, procs, origin)
    for i in range(15):     # more than the 10 sockets: replacements must arrive
        assert fake.send(b"GET /headers?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i).endswith(b'"url":"/headers?i=%d",' % i
                                                                                      + b'"headers":{"host":"x"}}')


def test_local_close_after_a_complete_response_keeps_the_tunnel_socket(fake_server, procs, origin):
    fake = fake_server(accept=1)
    start_against(fake, procs, origin)
    sock = fake.sockets.peek(timeout=5)
    for _ in range(3):      # the origin closes its connection after each /close answer
        raw = fake.send(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.endswith(b"bye") and b"connection: close" in raw.lower()
    # All three went over the one socket the fake takes; a replacement would have been refused.
    assert fake.sockets.qsize() == 1 and fake.sockets.peek(timeout=1) is sock


# --- --local-https ----------------------------------------------------------------------------

class TlsOrigin:
    """A local HTTPS service on 127.0.0.1 answering every request with "secure hello"."""

    def __init__(self, cert, key, client_ca=None):
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        self.server = StreamServer(("127.0.0.1", 0), self._handle, ssl_context=context)
        self.server.start()
        self.port = self.server.server_port

    @staticmethod
    def _handle(sock, _addr):
        try:
            while helpers.read_request_head(sock):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nsecure hello")
        except OSError:
            pass


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from certs import make_certs
    return make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.mark.parametrize("flags, ok", [
    (["--local-https", "--local-ca", "{ca}"], True),               # verified against its CA
    (["--local-https", "--allow-invalid-cert"], True),             # not verified at all
    (["--local-https"], False),                                    # unknown CA: refused
])
def test_local_https_verification(server, procs, certs, flags, ok):
    origin = TlsOrigin(*certs["server"])
    flags = [f.format(ca=certs["ca"][0]) for f in flags]
    _, url = start_client("python", procs, server.port, origin.port, extra=flags)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    answer = visit(server.port, name, "/")
    if ok:
        assert answer.status_code == 200 and answer.text == "secure hello"
    else:
        assert answer.status_code == 502 and "TLS handshake failed" in answer.text
    origin.server.stop()


def test_local_https_with_a_client_certificate(server, procs, certs):
    origin = TlsOrigin(*certs["server"], client_ca=certs["ca"][0])
    base = ["--local-https", "--local-ca", certs["ca"][0]]
    _, url = start_client("python", procs, server.port, origin.port, extra=base + [
        "--local-cert", certs["client"][0], "--local-key", certs["client"][1]])
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    assert visit(server.port, name, "/").text == "secure hello"
    _, url = start_client("python", procs, server.port, origin.port, extra=base)
    without = tunnel_name(url)
    wait_sockets(server.port, without, 10)
    assert visit(server.port, without, "/").status_code == 502
    origin.server.stop()


def test_local_connections_open_only_when_requests_arrive(server, procs):
    _, origin = start_origin(procs)
    _, url = start_client("python", procs, server.port, origin)
    name = tunnel_name(url)
    wait_sockets(server.port, name, 10)
    stats = "http://127.0.0.1:%d/stats" % origin
    assert requests.get(stats).json()["connections"] == 1      # just this /stats request
    visit(server.port, name, "/hello")
    assert requests.get(stats).json()["connections"] == 3      # /stats, the visit, /stats


def test_open_flag_opens_the_url_in_a_browser(server, origin, procs, tmp_path):
    opened = tmp_path / "opened"
    # Python's webbrowser runs $BROWSER with the URL in place of %s.
    browser = "%s -c \"import sys; open('%s', 'w').write(sys.argv[1])\" %%s" % (sys.executable, opened)
    proc = procs(our_client_argv(server.port, origin, extra=["--open"]), env={"BROWSER": browser})
    url = proc.wait_for(r"your url is: (\S+)", 10).group(1)
    with gevent.Timeout(5, AssertionError("no browser was started")):
        while not opened.exists() or not opened.read_text():
            gevent.sleep(0.05)
    assert opened.read_text() == url


def test_backoff_grows_from_half_a_second_to_30_with_jitter():
    import lt_client
    backoff = lt_client.Backoff()
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    delays = [backoff.next() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) > 1     # jittered, so restarted servers are not stampeded
    backoff.reset()
    assert backoff.next() <= 0.5
