"""Tunnel sockets through the public port (issue 16, part 3): our client opens them as HTTP/1.1
upgrades proven by the tunnel's secret, through plain HTTP, through the server's own TLS and
through the nginx front in deploy/; --tunnel-ports=off opens no tunnel port at all and tells the
npm client to use lt-client; and every limit of a tunnel port holds here too."""
import json
import os
import shutil
import socket
import sys

import pytest
import requests

import helpers
from certs import CertAuthority
from localtunnel.server.tls import Certificates
from localtunnel.wire import protocol
from test_deploy import needs_nginx, nginx_in_front, tls_get


def our_client(procs, url, origin, env=None, *extra):
    proc = procs([sys.executable, os.path.join(helpers.ROOT, "lt_client.py"), "-h", url, "-p", str(origin),
                  "--inspect=off", *extra], env=env)
    return proc, proc.wait_for(r"your url is: (\S+)", 15).group(1)


def created(port, upgrade=True):
    headers = {"Host": "localhost"}
    if upgrade:
        headers[protocol.SOCKET_UPGRADE_HEADER] = "1"
    return requests.get("http://127.0.0.1:%d/?new" % port, headers=headers, timeout=5)


def upgrade(port, info, secret=None, extra=b""):
    """A raw socket through the public port, its upgrade sent: (socket, the answer's head)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: localtunnel-socket\r\n"
                 b"X-Localtunnel-Socket-Secret: %s\r\n\r\n%s" % (
                     info["socket_upgrade"]["path"].encode(), (secret or info["socket_upgrade"]["secret"]).encode(), extra))
    return sock, helpers.read_request_head(sock)


@pytest.mark.deadline(60)
def test_with_tunnel_ports_off_our_client_serves_through_the_public_port(make_server, procs, origin):
    server = make_server(tunnel_ports=False)
    _, url = our_client(procs, "http://localhost:%d" % server.port, origin)
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    assert server.registry.get(name).port == 0      # no port of its own was opened
    with requests.Session() as session:
        for number in range(20):
            assert helpers.visit(server.port, name, "/headers?n=%d" % number, session=session).status_code == 200
    sock = helpers.ws_connect(server.port, "%s.localhost:%d" % (name, server.port))
    helpers.ws_send(sock, b"through the front")
    assert helpers.ws_recv(sock) == (2, b"through the front")
    sock.close()


@pytest.mark.node
@pytest.mark.deadline(60)
def test_the_npm_client_is_told_to_use_lt_client_when_ports_are_off(make_server, procs, origin):
    server = make_server(tunnel_ports=False)
    refused = created(server.port, upgrade=False)
    assert refused.status_code == 400 and "lt-client" in refused.json()["message"]
    # npm lt 2.0.2 prints no 4xx answer's message: it retries every second, and says why only
    # in its debug output. It never gets a tunnel.
    proc = procs(helpers.node_client_argv(server.port, origin), env={"DEBUG": "localtunnel:*"})
    proc.wait_for(r"tunnel server offline: Request failed with status code 400, retry 1s", 20)
    assert "your url is" not in proc.output and len(server.registry) == 0


@pytest.mark.deadline(60)
def test_through_the_servers_own_tls(make_server, procs, origin, tmp_path):
    ca = CertAuthority(str(tmp_path))
    server = make_server(tunnel_ports=False, secure=True,
                         certificates=Certificates(*ca.leaf("site", "localhost", "calm-otter.localhost")))
    _, url = our_client(procs, "https://localhost:%d" % server.port, origin, {"SSL_CERT_FILE": ca.path},
                        "-s", "calm-otter")
    helpers.wait_until(lambda: helpers.sockets_of(server, "calm-otter") == 10, 10, "ten sockets over TLS")
    from test_tls import get, https
    conn = https(server.port, "calm-otter.localhost", ca.path)
    for number in range(10):
        status, body, _ = get(conn, "/headers?n=%d" % number)
        assert status == 200 and json.loads(body)["headers"]["x-forwarded-proto"] == "https"


@needs_nginx
@pytest.mark.deadline(60)
def test_through_the_nginx_front_in_deploy(make_server, procs, origin, tmp_path):
    ca = CertAuthority(str(tmp_path))
    server = make_server(tunnel_ports=False, secure=True)
    https_port, _ = nginx_in_front(tmp_path, ca.leaf("nginx", "localhost", "calm-otter.localhost"), server.port, procs)
    _, url = our_client(procs, "https://localhost:%d" % https_port, origin, {"SSL_CERT_FILE": ca.path}, "-s", "calm-otter")
    helpers.wait_until(lambda: helpers.sockets_of(server, "calm-otter") == 10, 10, "ten sockets through nginx")
    assert tls_get(https_port, "calm-otter.localhost", "/hello").endswith(b"hello")


def test_only_the_secret_opens_a_socket_and_only_as_many_as_allowed(server):
    info = created(server.port).json()
    sock, head = upgrade(server.port, info, secret="not-the-secret")
    assert helpers.status_of(head) == 403 and b"X-Localtunnel-Status: bad-socket-secret" in head
    sock.close()
    missing = dict(info, socket_upgrade=dict(info["socket_upgrade"], path=protocol.SOCKET_PATH + "nobody-here"))
    sock, head = upgrade(server.port, missing)
    assert helpers.status_of(head) == 404
    sock.close()
    kept = []
    for _ in range(info["max_conn_count"]):
        sock, head = upgrade(server.port, info)
        assert head.startswith(b"HTTP/1.1 101 ")
        kept.append(sock)
    helpers.wait_until(lambda: helpers.sockets_of(server, info["id"]) == info["max_conn_count"], 5, "the sockets")
    sock, head = upgrade(server.port, info)
    assert helpers.status_of(head) == 429 and b"X-Localtunnel-Status: socket-limit" in head
    sock.close()
    # An idle socket that sends what nobody asked for is dropped, as on a tunnel port.
    kept[0].sendall(b"junk")
    helpers.wait_until(lambda: helpers.sockets_of(server, info["id"]) == info["max_conn_count"] - 1, 5,
                       "the socket that spoke out of turn to be dropped")
    for sock in kept:
        sock.close()


def test_bytes_before_the_answer_are_refused(server):
    info = created(server.port).json()
    sock, head = upgrade(server.port, info, extra=b"HTTP/1.1 200 OK\r\n\r\n")
    assert helpers.status_of(head) == 400       # refused before any 101: never a tunnel socket
    sock.close()
    assert helpers.sockets_of(server, info["id"]) == 0


@pytest.mark.skipif(not shutil.which("caddy"), reason="caddy is not installed (make test-setup installs it)")
@pytest.mark.deadline(60)
def test_through_the_caddy_front_in_deploy(make_server, procs, origin, tmp_path):
    """deploy/caddy/Caddyfile run for real, but for its names and ports: our client's sockets
    and a visitor both go through Caddy's TLS."""
    ca = CertAuthority(str(tmp_path))
    cert, key = ca.leaf("caddy", "localhost", "calm-otter.localhost")
    server = make_server(tunnel_ports=False, secure=True)
    port = helpers.free_port()
    with open(os.path.join(helpers.ROOT, "deploy", "caddy", "Caddyfile")) as shipped:
        config = shipped.read()
    config = config.replace("example.com, *.example.com {", "localhost:%d, calm-otter.localhost:%d {" % (port, port))
    config = config.replace("reverse_proxy 127.0.0.1:8080", "reverse_proxy 127.0.0.1:%d" % server.port)
    # Only for the test: no admin endpoint, no redirect listener on port 80.
    (tmp_path / "Caddyfile").write_text("{\n\tadmin off\n\tauto_https disable_redirects\n}\n" + config)
    procs(["caddy", "run", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
          env={"CADDY_TLS_CERT": cert, "CADDY_TLS_KEY": key, "HOME": str(tmp_path),
               "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")})
    helpers.wait_listening(port)
    our_client(procs, "https://localhost:%d" % port, origin, {"SSL_CERT_FILE": ca.path}, "-s", "calm-otter")
    helpers.wait_until(lambda: helpers.sockets_of(server, "calm-otter") == 10, 10, "ten sockets through Caddy")
    from test_tls import get, https
    status, body, _ = get(https(port, "calm-otter.localhost", ca.path), "/hello")
    assert (status, body) == (200, b"hello")
