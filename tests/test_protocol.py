"""The pure contract module: names, ids, tunnel-info JSON, Host -> id, error pages."""
import base64
import json
import random

import pytest
from hypothesis import given, strategies as st

from localtunnel.wire import protocol


@pytest.mark.parametrize("name, valid", [
    ("abcd", True), ("calm-otter-42", True), ("a" * 63, True), ("a-bcd-e", True),
    ("abc", False), ("Abcd", False), ("-abcd", False), ("abcd-", False), ("ab_cd", False),
    ("a" * 64, True),      # the rule's first branch allows 1 + 63 + 1 characters
    ("a" * 66, False), ("", False), ("abcd.efgh", False), ("abcd\n", False),
])
def test_name_rule_is_the_reference_servers(name, valid):
    assert protocol.is_valid_name(name) is valid


def test_invalid_name_body_is_exactly_the_reference_text():
    assert protocol.INVALID_NAME_BODY == (
        '{"message":"Invalid subdomain. Subdomains must be lowercase and between 4 and 63 '
        'alphanumeric characters."}')


@given(st.integers())
def test_random_ids_are_readable_and_always_valid(seed):
    tunnel_id = protocol.random_id(random.Random(seed))
    adjective, animal, number = tunnel_id.split("-")
    assert protocol.is_valid_name(tunnel_id)
    assert adjective.isalpha() and animal.isalpha() and 1 <= int(number) <= 99


def test_tunnel_info_keys_are_in_the_node_order_and_compact():
    body = protocol.tunnel_info("calm-otter-42", 40001, 10, "http://calm-otter-42.example.com")
    assert body == ('{"id":"calm-otter-42","port":40001,"max_conn_count":10,'
                    '"url":"http://calm-otter-42.example.com"}')
    assert list(json.loads(body)) == ["id", "port", "max_conn_count", "url"]


def test_url_uses_the_host_as_sent_and_secure_scheme():
    assert protocol.tunnel_url("abcd", "example.com:8080") == "http://abcd.example.com:8080"
    assert protocol.tunnel_url("abcd", "example.com", secure=True) == "https://abcd.example.com"


@pytest.mark.parametrize("host, domain, expected", [
    ("calm-otter-42.example.com", "example.com", "calm-otter-42"),
    ("Calm-Otter-42.Example.COM:8080", "example.com", "calm-otter-42"),
    ("example.com", "example.com", None),
    ("other.org", "example.com", None),
    ("a.b.example.com", "example.com", "a.b"),      # not a valid name: the router answers 404
    ("x.example.com", None, "x"),
    ("example.com", None, None),
    ("x.example.co.uk", None, "x"),
    ("example.co.uk", None, None),
    ("abcd.localhost:8080", None, "abcd"),
    ("abcd.localhost", "localhost", "abcd"),
    ("localhost:8080", None, None),
    ("localhost", "localhost", None),
    ("127.0.0.1:80", None, None),
    ("[::1]:8080", None, None),
    ("x.example.com.", None, "x"),
])
def test_host_to_tunnel_id(host, domain, expected):
    assert protocol.tunnel_id_for_host(host, domain) == expected


def test_error_response_is_complete_http_with_status_header():
    raw = protocol.error_response(504, "no-free-socket", "Busy.\nTry again.")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert b"X-Localtunnel-Status: no-free-socket" in head
    assert b"Content-Length: %d" % len(body) in head
    assert body == b"Busy.\nTry again.\n"


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("203.0.113.5", "6.6.6.6", "203.0.113.5"),                 # untrusted peer: its header is ignored
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.5", "203.0.113.5"),               # a trusted proxy's word
    ("127.0.0.1", "6.6.6.6, 203.0.113.5", "203.0.113.5"),      # the client wrote the left part
    ("127.0.0.1", "203.0.113.5, 127.0.0.1", "203.0.113.5"),    # proxies in a chain are skipped
    ("127.0.0.1", " , ", "127.0.0.1"),
])
def test_client_address_trusts_only_trusted_proxies(peer, forwarded, expected):
    assert protocol.client_address(peer, forwarded, frozenset({"127.0.0.1", "::1"})) == expected


@pytest.mark.parametrize("text, normal", [
    ("::ffff:203.0.113.5", "203.0.113.5"),      # IPv4 through a dual-stack socket
    ("203.0.113.5", "203.0.113.5"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("not-an-address", "not-an-address"),
    ("010.1.1.1", "010.1.1.1"),                  # leading zeros: no IPv4 address, left alone
])
def test_addresses_have_one_spelling(text, normal):
    assert protocol.normal_address(text) == normal
    assert protocol.client_address("127.0.0.1", text, frozenset({"127.0.0.1"})) == normal


@pytest.mark.parametrize("header, ok", [
    ("Bearer s3cret", True),
    ("bearer  s3cret ", True),
    ("Basic " + base64.b64encode(b"anyone:s3cret").decode(), True),
    ("Basic " + base64.b64encode(b"s3cret:").decode(), False),   # the token is the password
    ("Bearer wrong", False),
    ("Basic !!!notbase64", False),
    ("Digest s3cret", False),
    ("", False),
    (None, False),
])
def test_token_matches_bearer_or_basic_password(header, ok):
    assert protocol.token_matches(header, "s3cret") is ok


def test_host_routing_cache_remembers_only_short_hosts():
    # Issue 11: 4,200 unique 32 KB Host values once grew the server by 130 MB for good.
    cache = protocol._tunnel_id_for_raw_host
    cache.cache_clear()
    for i in range(50):
        assert protocol.tunnel_id_for_host("x%d." % i + "a" * 32768 + ".localhost") is not None
    assert cache.cache_info().currsize == 0
    for spelling in ("Calm-Otter.localhost", "calm-otter.LOCALHOST:80", " calm-otter.localhost.:8080",
                     " " * 300 + "calm-otter.localhost"):
        assert protocol.tunnel_id_for_host(spelling) == "calm-otter"
    assert cache.cache_info().currsize == 3
    # Endless short spellings stay within the cache's bound.
    for port in range(10000):
        protocol.tunnel_id_for_host("calm-otter.localhost:%d" % port)
    assert cache.cache_info().currsize == cache.cache_info().maxsize
