"""TLS on the public port itself (issue 16, part 2): certificates the tests make (a test CA and
leaves it signs), verified by every client (no verify=False): our client, the npm client through
NODE_EXTRA_CA_CERTS, and visitors with keep-alive, WebSockets and 64 MiB both ways; SNI, SIGHUP
reloads, the HTTP redirect port, and the bounds on a handshake."""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time

import pytest
import requests

import helpers
from certs import CertAuthority
from localtunnel.server.tls import Certificates


@pytest.fixture
def ca(tmp_path):
    return CertAuthority(str(tmp_path))


@pytest.fixture
def tls_server(make_server, ca):
    # Names, not *.localhost: OpenSSL verifies no wildcard directly under a one-label domain.
    # (A wildcard under a real domain is what a deployment has; SNI below tests that one.)
    return make_server(certificates=Certificates(*ca.leaf("site", *SITE_NAMES)), secure=True)


SITE_NAMES = ("localhost", "calm-otter.localhost", "brave-fox.localhost")


def tls_socket(port, host, ca_path, **context_options):
    context = ssl.create_default_context(cafile=ca_path)
    for name, value in context_options.items():
        setattr(context, name, value)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=host)


def https(port, host, ca_path):
    """An http.client connection to `host` over TLS verified with `ca_path`, kept alive."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.sock = tls_socket(port, host, ca_path)
    return conn


def get(conn, path, method="GET", body=None):
    conn.request(method, path, body=body)
    answer = conn.getresponse()
    return answer.status, answer.read(), answer


def start_our_client(procs, port, origin, ca, *extra):
    proc = procs([sys.executable, os.path.join(helpers.ROOT, "lt_client.py"), "-h", "https://localhost:%d" % port,
                  "-p", str(origin), "--inspect=off", *extra], env={"SSL_CERT_FILE": ca.path})
    url = proc.wait_for(r"your url is: (\S+)", 15).group(1)
    return proc, url


@pytest.mark.deadline(120)
def test_our_client_and_its_visitors_over_the_servers_own_tls(tls_server, procs, origin, ca):
    _, url = start_our_client(procs, tls_server.port, origin, ca, "-s", "calm-otter")
    assert url == "https://calm-otter.localhost:%d" % tls_server.port
    name = helpers.tunnel_name(url)
    host = "%s.localhost" % name
    _wait_tls_sockets(tls_server, name)
    conn = https(tls_server.port, host, ca.path)
    for number in range(5):     # keep-alive: one TLS connection, five requests
        status, body, _ = get(conn, "/headers?n=%d" % number)
        assert status == 200 and json.loads(body)["headers"]["x-forwarded-proto"] == "https"
    size = 64 * 1024 * 1024
    status, body, _ = get(conn, "/bytes?n=%d" % size)
    assert status == 200 and hashlib.sha256(body).digest() == helpers.pattern_digest(size)
    upload = os.urandom(size)
    status, body, _ = get(conn, "/digest", "POST", upload)
    assert json.loads(body) == {"bytes": size, "sha256": hashlib.sha256(upload).hexdigest()}
    conn.close()
    sock = tls_socket(tls_server.port, host, ca.path)
    try:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % host.encode())
        assert helpers.read_request_head(sock).startswith(b"HTTP/1.1 101")
        for payload in (b"hi", os.urandom(70000)):
            helpers.ws_send(sock, payload)
            assert helpers.ws_recv(sock) == (2, payload)
    finally:
        sock.close()


def _wait_tls_sockets(server, name):
    helpers.wait_until(lambda: helpers.sockets_of(server, name) >= 10, 10, "tunnel sockets of " + name)


@pytest.mark.node
@pytest.mark.deadline(60)
def test_the_npm_client_over_tls_trusting_the_test_ca(tls_server, procs, origin, ca):
    proc = procs([helpers.LT, "--host", "https://localhost:%d" % tls_server.port, "--port", str(origin),
                  "--subdomain", "brave-fox"],
                 env={"NODE_EXTRA_CA_CERTS": ca.path})
    url = proc.wait_for(r"your url is: (\S+)", 20).group(1)
    assert url.startswith("https://")
    name = helpers.tunnel_name(url)
    _wait_tls_sockets(tls_server, name)
    status, body, _ = get(https(tls_server.port, "%s.localhost" % name, ca.path), "/hello")
    assert (status, body) == (200, b"hello")


def test_sni_picks_each_names_own_certificate(make_server, ca, tmp_path):
    directory = tmp_path / "certs"
    directory.mkdir()
    for stem, names in (("wildcard", ("lt.test", "*.lt.test")), ("custom", ("custom.test",))):
        cert, key = ca.leaf(stem, *names)
        shutil.move(cert, directory / (stem + ".pem"))
        shutil.move(key, directory / (stem + ".key"))
    server = make_server(certificates=Certificates(directory=str(directory)), secure=True, domain="lt.test")
    for host in ("custom.test", "calm-otter.lt.test", "lt.test"):
        with tls_socket(server.port, host, ca.path) as sock:     # verified against `host`
            assert sock.version() in ("TLSv1.2", "TLSv1.3")


def test_old_protocols_and_silent_or_plain_clients_get_nothing(tls_server, ca):
    # TLS 1.2 and later only. (A client offering 1.1 is refused by its own OpenSSL here before
    # the server is asked, so the server's floor is read from its context.)
    assert tls_server.settings.certificates._default.minimum_version == ssl.TLSVersion.TLSv1_2
    with tls_socket(tls_server.port, "localhost", ca.path, maximum_version=ssl.TLSVersion.TLSv1_2) as sock:
        assert sock.version() == "TLSv1.2"
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert helpers.read_all(plain) == b""      # no handshake: closed, nothing served
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as silent:
        started = time.monotonic()
        assert helpers.read_all(silent) == b""
        assert time.monotonic() - started < tls_server.settings.head_timeout + 2


def test_the_redirect_port_sends_plain_http_to_https(make_server, ca):
    redirect = helpers.free_port()
    certificates = Certificates(*ca.leaf("site", *SITE_NAMES))
    server = make_server(certificates=certificates, secure=True, http_redirect_port=redirect)
    answer = helpers.raw_exchange(redirect, b"POST /hook?x=1 HTTP/1.1\r\nHost: calm-otter.localhost:80\r\n"
                                            b"Content-Length: 0\r\n\r\n")
    assert helpers.status_of(answer) == 308
    assert b"\r\nLocation: https://calm-otter.localhost:%d/hook?x=1\r\n" % server.port in answer
    api = helpers.raw_exchange(redirect, b"GET /?new HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert helpers.status_of(api) == 308
    open_api = make_server(certificates=certificates, secure=True, http_redirect_port=helpers.free_port(),
                           http_api=True)
    served = helpers.raw_exchange(open_api.settings.http_redirect_port,
                                  b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert helpers.status_of(served) == 200 and b'"tunnels"' in served


@pytest.mark.deadline(60)
def test_sighup_reads_the_certificates_again_and_drops_nobody(procs, ca, tmp_path):
    directory = tmp_path / "live"
    directory.mkdir()

    def install(stem_cert_key):
        cert, key = stem_cert_key
        shutil.copy(cert, directory / "site.pem")
        shutil.copy(key, directory / "site.key")

    install(ca.leaf("first", *SITE_NAMES))
    port = helpers.free_port()
    server = procs([sys.executable, os.path.join(helpers.ROOT, "lt_server.py"), "--port", str(port), "--address",
                    "127.0.0.1", "--domain", "localhost", "--tls-dir", str(directory)])
    server.wait_for("listening on", 15)
    kept = https(port, "localhost", ca.path)
    assert get(kept, "/api/status")[0] == 200
    info = json.loads(get(kept, "/calm-otter")[1])     # a tunnel, which must outlive the reload
    client = helpers.FakeClient(info, 2)
    before = _served_certificate(port, ca)
    install(ca.leaf("second", *SITE_NAMES))
    server.signal(signal.SIGHUP)
    helpers.wait_until(lambda: _served_certificate(port, ca) != before, 10, "the new certificate to be served")
    assert get(kept, "/api/status")[0] == 200       # the connection from before goes on
    status, body, _ = get(https(port, "calm-otter.localhost", ca.path), "/after-reload")
    assert (status, body) == (200, b"GET /after-reload HTTP/1.1")     # and so does the tunnel
    client.close()
    shutil.copy(ca.leaf("third", "localhost")[1], directory / "site.key")      # a key of another certificate
    server.signal(signal.SIGHUP)
    server.wait_for("not reloaded, still serving the previous certificates", 10)
    with tls_socket(port, "calm-otter.localhost", ca.path):
        pass    # still the second certificate, still valid


def _served_certificate(port, ca):
    with tls_socket(port, "localhost", ca.path) as sock:
        return sock.getpeercert(binary_form=True)


def test_a_key_that_is_not_the_certificates_own_is_one_line_at_start(procs, ca):
    cert, _ = ca.leaf("a", "localhost")
    _, other_key = ca.leaf("b", "localhost")
    proc = procs([sys.executable, os.path.join(helpers.ROOT, "lt_server.py"), "--port", str(helpers.free_port()),
                  "--tls-cert", cert, "--tls-key", other_key])
    assert proc.wait(15) == 2
    assert proc.output.strip().startswith("lt-server: TLS: %s with key %s:" % (cert, other_key))
    assert len(proc.output.strip().splitlines()) == 1


def test_a_missing_key_is_one_line_at_start(procs, ca, tmp_path):
    cert, _ = ca.leaf("lonely", "localhost")
    missing = str(tmp_path / "no-such.key")
    proc = procs([sys.executable, os.path.join(helpers.ROOT, "lt_server.py"), "--port", str(helpers.free_port()),
                  "--tls-cert", cert, "--tls-key", missing])
    assert proc.wait(15) == 2
    assert proc.output.strip() == "lt-server: TLS: %s: no such file" % missing


@helpers.needs_redis
def test_a_tls_visitor_at_another_node_is_spliced_not_passed(make_server, ca, redis_server):
    """Nodes of one machine pass plain visitor sockets to each other, but a TLS connection's
    state lives in the process that shook hands: B keeps it and splices it to A instead."""
    certificates = Certificates(*ca.leaf("site", *SITE_NAMES))
    a, b = (make_server(certificates=certificates, secure=True, redis_url=redis_server.url,
                        node_address="127.0.0.1", lease=1.0) for _ in range(2))
    info = requests.get("https://localhost:%d/calm-otter" % a.port, verify=ca.path, timeout=10).json()
    client = helpers.FakeClient(info, 2, helpers.echo_head_handler)
    helpers.wait_until(lambda: helpers.sockets_of(a, "calm-otter") >= 2, 10, "the tunnel's sockets")
    conn = https(b.port, "calm-otter.localhost", ca.path)
    for number in range(3):
        status, body, _ = get(conn, "/%d" % number)
        assert status == 200 and body.startswith(b"GET /%d HTTP/1.1" % number)
    conn.close()
    assert b.metrics.handed_over == 1 and b.metrics.sockets_passed == 0
    client.close()
