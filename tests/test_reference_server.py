"""Our client against the Node.js localtunnel server itself (localtunnel/server, from
../shared/anchors, installed by scripts/install-reference-server): the other half of "wire
compatible in both directions", which the contract fake in test_client.py only imitates."""
import os

import pytest

import helpers
from helpers import start_client, tunnel_name, visit

REFERENCE = helpers.REFERENCE_SERVER

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(not os.path.exists(os.path.join(REFERENCE, "node_modules", "esm")),
                       reason="the Node localtunnel server is not installed: it comes from ../shared/anchors "
                              "(scripts/install-reference-server, run by make test-setup)"),
]


@pytest.mark.deadline(60)
def test_our_client_serves_through_the_node_server(reference_server, procs, origin):
    proc, url = start_client("python", procs, reference_server, origin, subdomain="py-client-ref")
    assert url == "http://py-client-ref.localhost:%d" % reference_server
    name = tunnel_name(url)
    helpers.wait_sockets(reference_server, name, 10)
    with helpers.requests.Session() as session:     # keep-alive: the Node server pipes it whole
        for _ in range(5):
            assert visit(reference_server, name, "/hello", session=session).text == "hello"
    body = os.urandom(1 << 20)
    echoed = visit(reference_server, name, "/echo", method="POST", data=body)
    assert echoed.status_code == 200 and echoed.content == body
    sock = helpers.ws_connect(reference_server, "%s.localhost:%d" % (name, reference_server))
    try:
        helpers.ws_send(sock, b"through node")
        assert helpers.ws_recv(sock) == (2, b"through node")
    finally:
        sock.close()
    assert "Traceback" not in proc.output
