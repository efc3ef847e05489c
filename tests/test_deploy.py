"""deploy/: every file checked by the real tool that reads it, and the nginx front run for real
in front of our server (TLS, WebSocket upgrade, forwarded headers)."""
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

import helpers
from certs import make_wildcard_cert
from helpers import FakeClient

DEPLOY = os.path.join(helpers.ROOT, "deploy")
needs_nginx = pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (make test-setup installs it)")


def read(*path):
    with open(os.path.join(DEPLOY, *path)) as source:
        return source.read()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_wildcard_cert(str(tmp_path_factory.mktemp("tls")), "example.com", "localhost")


def nginx_conf(tmp_path, cert, body):
    """A main nginx.conf around a copy of the deploy file, with paths made local."""
    body = body.replace("/etc/ssl/localtunnel/fullchain.pem", cert[0]).replace("/etc/ssl/localtunnel/privkey.pem", cert[1])
    (tmp_path / "localtunnel.conf").write_text(body)
    main = tmp_path / "nginx.conf"
    main.write_text("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  access_log off;\n"
                    "  include %s/localtunnel.conf;\n}\n" % (tmp_path, tmp_path, tmp_path))
    return str(main)


@needs_nginx
def test_nginx_config_passes_nginx_t(tmp_path, cert):
    main = nginx_conf(tmp_path, cert, read("nginx", "localtunnel.conf"))
    result = subprocess.run(["nginx", "-t", "-c", main, "-p", str(tmp_path)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def nginx_in_front(tmp_path, cert, upstream_port, procs):
    """The deploy config, as is but for ports and names: HTTPS on a free loopback port."""
    https_port, http_port = helpers.free_port(), helpers.free_port()
    body = read("nginx", "localtunnel.conf")
    body = body.replace("listen [::]:80;", "").replace("listen [::]:443 ssl;", "")
    body = body.replace("listen 80;", "listen 127.0.0.1:%d;" % http_port)
    body = body.replace("listen 443 ssl;", "listen 127.0.0.1:%d ssl;" % https_port)
    body = body.replace("server 127.0.0.1:8080;", "server 127.0.0.1:%d;" % upstream_port)
    body = body.replace("example.com", "localhost")
    main = nginx_conf(tmp_path, cert, body)
    procs(["nginx", "-c", main, "-p", str(tmp_path), "-g", "daemon off;"])
    helpers.wait_listening(https_port)
    return https_port, http_port


def tls_connect(port, host):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # nginx's cert is not under test
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host)


def tls_get(port, host, path="/"):
    with tls_connect(port, host) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
        return helpers.read_all(sock)


def echo_head(sock, head):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head))


@needs_nginx
def test_nginx_front_terminates_tls_and_passes_forwarded_headers(make_server, procs, tmp_path, cert):
    server = make_server(secure=True)
    https_port, http_port = nginx_in_front(tmp_path, cert, server.port, procs)
    # The API through TLS: tunnel URLs say https:// and name the host as the proxy passed it.
    raw = tls_get(https_port, "localhost", "/?new")
    info = __import__("json").loads(raw.split(b"\r\n\r\n", 1)[1])
    assert info["url"] == "https://%s.localhost" % info["id"]
    client = FakeClient(info, 2, handler=echo_head)
    helpers.wait_sockets(server.port, info["id"], 2)
    seen = tls_get(https_port, "%s.localhost" % info["id"], "/through")
    assert seen.startswith(b"HTTP/1.1 200 OK")
    # nginx is a trusted proxy (loopback): its Proto and Host stand, and its own address is added.
    assert b"X-Forwarded-Proto: https\r\n" in seen
    assert b"X-Forwarded-Host: %s.localhost\r\n" % info["id"].encode() in seen
    assert b"X-Forwarded-For: 127.0.0.1, 127.0.0.1\r\n" in seen
    # Plain HTTP is sent to HTTPS.
    plain = helpers.raw_exchange(http_port, b"GET /x HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 301") and b"Location: https://a.localhost/x" in plain
    client.close()


@needs_nginx
@pytest.mark.node
def test_nginx_front_carries_websockets_through_a_tunnel(server, origin, procs, tmp_path, cert):
    https_port, _ = nginx_in_front(tmp_path, cert, server.port, procs)
    _, url = helpers.start_client("python", procs, server.port, origin)
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    sock = tls_connect(https_port, "%s.localhost" % name)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: %s.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % name.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    for payload in (b"over tls", os.urandom(1000)):
        helpers.ws_send(sock, payload)
        assert helpers.ws_recv(sock) == (2, payload)
    sock.close()


@pytest.mark.skipif(not shutil.which("caddy"), reason="caddy is not installed (make test-setup installs it)")
def test_caddyfile_validates(tmp_path, cert):
    env = dict(os.environ, CADDY_TLS_CERT=cert[0], CADDY_TLS_KEY=cert[1], HOME=str(tmp_path),
               XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    result = subprocess.run(["caddy", "validate", "--adapter", "caddyfile", "--config",
                             os.path.join(DEPLOY, "caddy", "Caddyfile")], capture_output=True, text=True,
                            env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit, env_file", [("lt-server.service", "server.env"), ("lt-client.service", "client.env")])
def test_systemd_units_verify(tmp_path, unit, env_file):
    """The units as shipped, with /opt/localtunnel pointing at this checkout's venv."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    text = read("systemd", unit).replace("/opt/localtunnel/.venv", venv)
    text = text.replace("/etc/localtunnel/" + env_file, os.path.join(DEPLOY, "systemd", env_file))
    (tmp_path / unit).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                            timeout=30)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if unit in line or "Unknown" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_containerfile_copies_what_exists_and_runs_one_gevent_worker():
    """No container engine runs here; what can be checked without one is checked."""
    text = read("Containerfile")
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert os.path.exists(os.path.join(helpers.ROOT, source)), source
    command = re.search(r"^CMD (.+)$", text, re.M).group(1)
    assert '"--worker-class", "gevent"' in command and '"--workers", "1"' in command
    assert "lt_server:app" in command and "--preload" not in command


needs_haproxy = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed (make test-setup installs it)")


@needs_haproxy
def test_cluster_balancer_config_passes_haproxy_c():
    result = subprocess.run(["haproxy", "-c", "-f", os.path.join(DEPLOY, "cluster", "haproxy.cfg")],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_haproxy
@helpers.needs_redis
def haproxy_in_front(nodes, procs, tmp_path):
    """The deploy file itself, with loopback ports for its bind and its two servers: its port."""
    front = helpers.free_port()
    config = read("cluster", "haproxy.cfg").replace("bind :80", "bind 127.0.0.1:%d" % front)
    config = config.replace("10.0.0.11:80", "127.0.0.1:%d" % nodes[0].port).replace("10.0.0.12:80", "127.0.0.1:%d" % nodes[1].port)
    (tmp_path / "haproxy.cfg").write_text(config)
    procs(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")])
    helpers.wait_listening(front)
    return front


def test_cluster_balancer_in_front_of_two_nodes(make_server, redis_server, procs, tmp_path):
    nodes = [make_server(redis_url=redis_server.url, node_address="127.0.0.1", lease=2.0) for _ in range(2)]
    front = haproxy_in_front(nodes, procs, tmp_path)
    info = helpers.new_tunnel(front)                # lands on either node
    client = helpers.FakeClient(info, 2, handler=helpers.echo_head_handler)    # to the node in `ip`, not through haproxy
    helpers.wait_sockets(front, info["id"], 2)
    with helpers.session_from("127.0.0.2") as session:
        for number in range(20):                    # round robin: both nodes answer visitors
            answer = helpers.visit(front, info["id"], "/v%d" % number, session=session, timeout=5)
            assert answer.status_code == 200 and answer.text.startswith("GET /v%d HTTP/1.1\r\n" % number)
            # haproxy's send-proxy line names the visitor, through either node.
            assert "X-Forwarded-For: 127.0.0.2" in answer.text
    client.close()


@needs_haproxy
@helpers.needs_redis
@pytest.mark.deadline(60)
def test_our_clients_sockets_through_the_balancer_reach_the_node_holding_its_tunnel(
        make_server, redis_server, procs, origin, tmp_path):
    """Round robin sends half of our client's tunnel sockets (upgrades through the public port)
    to the node that does not hold its tunnel: that node hands each over to the owner."""
    nodes = [make_server(redis_url=redis_server.url, node_address="127.0.0.1", lease=2.0) for _ in range(2)]
    front = haproxy_in_front(nodes, procs, tmp_path)
    _, url = helpers.start_client("python", procs, front, origin, subdomain="calm-otter", extra=["--inspect=off"])
    owner = next(node for node in nodes if node.registry.get("calm-otter") is not None)
    helpers.wait_until(lambda: helpers.sockets_of(owner, "calm-otter") == 10, 10, "all ten sockets at the owner")
    assert sum(node.metrics.handed_over for node in nodes) >= 1     # some came through the other node
    for number in range(10):
        assert helpers.visit(front, "calm-otter", "/hello?n=%d" % number, timeout=5).text == "hello"
