"""Who may visit a tunnel (issue 16, part 1): a password and an address list that our client asks
for, and the operator's defaults that hold for every tunnel, the npm client's too. Each refusal
is tested for real on loopback, and so is what it protects: nothing reaches the tunnel owner."""
import base64

import pytest
import requests

import helpers
from localtunnel.server import gate
from localtunnel.server.config import ConfigError, from_sources
from localtunnel.server.gate import BadRule, Credentials, Gate, gate_for, parse_networks


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def start_inspected_client(procs, server, origin, *flags):
    """Our client with the given rule flags and its inspector on a port of the test's own, which
    lists every request that reached the client: (tunnel name, inspector URL)."""
    port = helpers.free_port()
    _, url = helpers.start_client("python", procs, server.port, origin,
                                  extra=["--inspect", "127.0.0.1:%d" % port, *flags])
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    return name, "http://127.0.0.1:%d" % port


def reached_client(inspector):
    return [entry["path"] for entry in requests.get(inspector + "/api/requests", timeout=5).json()]


@pytest.mark.deadline(60)
def test_a_password_from_our_client_is_asked_before_anything_reaches_it(server, procs, origin):
    name, inspector = start_inspected_client(procs, server, origin, "--basic-auth", "ada:s3cret pass")
    bare = helpers.visit(server.port, name, "/headers?bare")
    assert bare.status_code == 401 and bare.headers["X-Localtunnel-Status"] == "auth-required"
    assert bare.headers["WWW-Authenticate"] == 'Basic realm="%s", charset="UTF-8"' % name
    for wrong in (basic("ada", "wrong"), basic("eve", "s3cret pass"), {"Authorization": "Basic !!!"},
                  {"Authorization": "Bearer s3cret pass"}):
        assert helpers.visit(server.port, name, "/headers?wrong", headers=wrong).status_code == 401
    right = helpers.visit(server.port, name, "/headers?right", headers=basic("ada", "s3cret pass"))
    assert right.status_code == 200
    assert "authorization" not in right.json()["headers"]      # the password goes no further than the server
    assert reached_client(inspector) == ["/headers?right"]


@pytest.mark.deadline(60)
def test_an_address_list_from_our_client_refuses_everyone_else(server, procs, origin):
    name, inspector = start_inspected_client(procs, server, origin, "--allow-ip", "127.0.0.2/32, 2001:db8::/32")
    url = "http://127.0.0.1:%d/headers" % server.port
    host = {"Host": "%s.localhost" % name}
    refused = helpers.get_from("127.0.0.1", url + "?from-1", host)
    assert refused.status_code == 403 and refused.headers["X-Localtunnel-Status"] == "address-not-allowed"
    assert "127.0.0.1" in refused.text
    assert helpers.get_from("127.0.0.2", url + "?from-2", host).status_code == 200
    # Behind a trusted proxy (loopback is one by default) the address it names counts...
    assert helpers.get_from("127.0.0.1", url + "?proxied-2", dict(host, **{"X-Forwarded-For": "127.0.0.2"})).status_code == 200
    assert helpers.get_from("127.0.0.1", url + "?proxied-9", dict(host, **{"X-Forwarded-For": "10.9.9.9"})).status_code == 403
    # ...and from anyone else the header is ignored: 127.0.0.3 is no proxy of ours.
    assert helpers.get_from("127.0.0.3", url + "?forged", dict(host, **{"X-Forwarded-For": "127.0.0.2"})).status_code == 403
    assert reached_client(inspector) == ["/headers?proxied-2", "/headers?from-2"]


@pytest.mark.deadline(60)
@pytest.mark.parametrize("kind", ["node", "python"])
def test_the_operators_defaults_hold_for_every_tunnel_the_npm_clients_too(make_server, procs, origin, kind):
    server = make_server(visitor_allow_ip=parse_networks("127.0.0.2/32", "test"),
                         visitor_basic_auth=Credentials("ops", "door"))
    _, url = helpers.start_client(kind, procs, server.port, origin)
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    url = "http://127.0.0.1:%d/hello" % server.port
    host = {"Host": "%s.localhost" % name}
    assert helpers.get_from("127.0.0.1", url, dict(host, **basic("ops", "door"))).status_code == 403
    assert helpers.get_from("127.0.0.2", url, host).status_code == 401
    assert helpers.get_from("127.0.0.2", url, dict(host, **basic("ops", "door"))).text == "hello"


@pytest.mark.deadline(60)
def test_a_tunnel_narrows_the_operators_list_and_never_widens_it(make_server, procs, origin):
    server = make_server(visitor_allow_ip=parse_networks("127.0.0.2/32", "test"))
    name, _ = start_inspected_client(procs, server, origin, "--allow-ip", "127.0.0.0/8")
    url = "http://127.0.0.1:%d/hello" % server.port
    assert helpers.get_from("127.0.0.3", url, {"Host": "%s.localhost" % name}).status_code == 403
    assert helpers.get_from("127.0.0.2", url, {"Host": "%s.localhost" % name}).status_code == 200


@pytest.mark.deadline(60)
def test_our_client_will_not_run_an_open_tunnel_where_rules_are_ignored(reference_server, procs, origin):
    """The Node server ignores the rule headers: our client says so and stops (status 2)."""
    client = procs(helpers.our_client_argv(reference_server, origin, extra=["--basic-auth", "a:b", "--inspect=off"]))
    assert client.wait(20) == 2, client.output
    assert "does not enforce --basic-auth" in client.output and "not starting" in client.output


def test_rules_the_server_cannot_read_are_a_400(server):
    for header, value in ((gate.BASIC_AUTH_HEADER, "not base64!"), (gate.BASIC_AUTH_HEADER, base64.b64encode(b"nocolon").decode()),
                          (gate.ALLOW_IP_HEADER, "10.0.0.0/33"), (gate.ALLOW_IP_HEADER, "x" * 5000)):
        answer = requests.get("http://127.0.0.1:%d/?new" % server.port, timeout=5,
                              headers={"Host": "localhost", header: value})
        assert answer.status_code == 400 and header in answer.json()["message"], answer.text


def test_the_operators_flags_are_checked_and_the_password_never_echoed():
    with pytest.raises(ConfigError) as info:
        from_sources({}, {"visitor_basic_auth": "letmein"})
    assert "letmein" not in str(info.value) and "--visitor-basic-auth" in str(info.value)
    with pytest.raises(ConfigError):
        from_sources({"LT_VISITOR_ALLOW_IP": "10.0.0.0/8,nonsense"})
    settings = from_sources({"LT_VISITOR_ALLOW_IP": "10.0.0.0/8, 2001:db8::/32"}, {"visitor_basic_auth": "ops:door"})
    assert [str(net) for net in settings.visitor_allow_ip] == ["10.0.0.0/8", "2001:db8::/32"]


# --- the pure parts -----------------------------------------------------------------------------

def test_the_password_is_kept_only_as_a_salted_digest():
    credentials = Credentials("ada", "s3cret")
    kept = b"".join(getattr(credentials, slot) for slot in Credentials.__slots__)
    assert b"s3cret" not in kept and b"ada" not in kept
    assert Credentials("ada", "s3cret")._digest != credentials._digest       # salted: each its own key


def test_a_wrong_user_and_a_wrong_password_take_the_same_steps(monkeypatch):
    """Timing from the outside is noise on a shared machine; the structure is what makes it
    constant: one digest of the whole credential and one comparison, whatever is wrong."""
    credentials = Credentials("ada", "s3cret")
    digests = []
    real = Credentials._hash
    monkeypatch.setattr(Credentials, "_hash", lambda self, data: digests.append(data) or real(self, data))
    for header in (basic("eve", "s3cret"), basic("ada", "nope"), basic("ada", "s3cret"), {"Authorization": "junk"}):
        before = len(digests)
        credentials.admit(header["Authorization"].encode())
        assert len(digests) - before == 1


@pytest.mark.parametrize("address, admitted", [
    ("203.0.113.9", True), ("203.0.114.1", False), ("2001:db8::1", True), ("2001:db9::1", False),
    ("not an address", False),
])
def test_an_address_is_admitted_by_its_ranges(address, admitted):
    visitor_gate = Gate("t", [parse_networks("203.0.113.0/24, 2001:db8::/32", "test")])
    assert (visitor_gate.refusal(address, None) is None) == admitted


def test_no_rules_means_no_gate_and_bad_ones_are_said():
    settings = from_sources({})
    assert gate_for("t", settings) is None
    with pytest.raises(BadRule):
        parse_networks(" , ", "--allow-ip")
