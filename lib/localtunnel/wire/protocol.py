"""The localtunnel wire contract, pure: names and ids, tunnel-info JSON, Host -> id, error pages.

Corresponds to localtunnel/server's server.js (API answers, Host routing) and the JSON that the
npm client's Tunnel.js reads. See shared/PROTOCOL.md, part A. Imports no socket, gevent or flask.
"""
import base64
import binascii
import functools
import hmac
import ipaddress
import json
import random
import re

from . import words

# The reference server's rule, exactly (PROTOCOL.md A1).
NAME_RULE = re.compile(r"^(?:[a-z0-9][a-z0-9\-]{4,63}[a-z0-9]|[a-z0-9]{4,63})$")
INVALID_NAME_MESSAGE = (
    "Invalid subdomain. Subdomains must be lowercase and between 4 and 63 alphanumeric characters."
)
INVALID_NAME_BODY = '{"message":"%s"}' % INVALID_NAME_MESSAGE
JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_MAX_SOCKETS = 10

# Tunnel sockets through the public port (our extension; the Node server has none): our client
# says it can with SOCKET_UPGRADE_HEADER on the creation request, the answer's "socket_upgrade"
# gives the path and the tunnel's secret, and each socket is an HTTP/1.1 upgrade to
# SOCKET_PROTOCOL on that path, the secret in SOCKET_SECRET_HEADER, answered 101.
SOCKET_UPGRADE_HEADER = "X-Localtunnel-Socket-Upgrade"
SOCKET_PATH = "/_lt/socket/"
SOCKET_PROTOCOL = "localtunnel-socket"
SOCKET_SECRET_HEADER = "X-Localtunnel-Socket-Secret"
SOCKET_UPGRADED = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: localtunnel-socket\r\n"
                   b"Connection: Upgrade\r\n\r\n")

# Who may visit a tunnel (our extension; the Node server ignores both headers): our client asks
# for rules when it creates the tunnel, the server (server/gate.py) enforces them. Parsed here, by
# both ends alike, so the ranges the client asked for read back as the server writes them.
BASIC_AUTH_HEADER = "X-Localtunnel-Basic-Auth"      # base64 of "user:password", as in Basic auth
ALLOW_IP_HEADER = "X-Localtunnel-Allow-Ip"          # comma-separated CIDRs, IPv4 and IPv6
#: Longest credential or list a client may send: enough for any sane password and many CIDRs.
MAX_RULE_TEXT = 4096


class BadRule(ValueError):
    """A rule that cannot be understood; the message says which and how to write it."""


def parse_networks(text, what):
    """A tuple of ip_network from "CIDR[,CIDR...]" (a bare address is its own /32 or /128)."""
    networks = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise BadRule("%s: %r is not an address or CIDR range (such as 203.0.113.0/24 or "
                          "2001:db8::/32)" % (what, part)) from None
    if not networks:
        raise BadRule("%s: expected one or more CIDR ranges, comma-separated" % what)
    return tuple(networks)


def split_credentials(text):
    """(user, password) from "USER:PASS"."""
    user, colon, password = str(text).partition(":")
    if not colon or not user or not password:
        raise BadRule("expected USER:PASS, both non-empty")
    return user, password


# Second-level public suffixes common enough to matter for "x.example.co.uk" routing. The
# reference uses the full public suffix list; without a domain configured this is a fallback.
_TWO_LABEL_SUFFIXES = frozenset((
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.nz", "co.jp",
    "co.kr", "co.in", "com.br", "com.cn", "com.mx", "com.tr", "co.za", "com.sg", "com.hk",
))


def is_valid_name(name):
    # fullmatch: Python's `$` also matches before a trailing newline, JavaScript's does not.
    return bool(NAME_RULE.fullmatch(name))


def random_id(rng=random):
    """A human-readable id such as calm-otter-42; always passes NAME_RULE."""
    return "%s-%s-%d" % (rng.choice(words.ADJECTIVES), rng.choice(words.ANIMALS), rng.randint(1, 99))


def tunnel_url(tunnel_id, host, secure=False):
    """The public URL: the id in front of the Host the client used, port included (A1)."""
    return "%s://%s.%s" % ("https" if secure else "http", tunnel_id, host)


def json_compact(value):
    """JSON as the Node server writes it: no spaces, keys in insertion order."""
    return json.dumps(value, separators=(",", ":"))


def tunnel_info(tunnel_id, port, max_conn_count, url, **extra):
    """The creation answer, in the key order the Node server sends."""
    info = {"id": tunnel_id, "port": port, "max_conn_count": max_conn_count, "url": url}
    info.update(extra)
    return json_compact(info)


def split_host(host):
    """(hostname, port or None) of a Host header value; hostname lowercased, no trailing dot."""
    host = host.strip()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, None
    return name.lower().rstrip("."), port or None


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


#: The longest DNS name. A longer Host names no tunnel, and is not worth remembering.
MAX_HOSTNAME = 253
#: The longest Host value remembered: a DNS name, brackets, a port and a little slack.
MAX_CACHED_HOST = MAX_HOSTNAME + 16


def tunnel_id_for_host(host, domain=None):
    """The tunnel id a Host header names, or None when it is for the API (A3).

    With a domain: whatever stands left of `.domain`. Without: the first label of a host that
    has more labels than its registrable domain; `x.localhost` counts, so browser demos work."""
    if len(host) > MAX_CACHED_HOST:
        return _tunnel_id_for_raw_host.__wrapped__(host, domain)
    return _tunnel_id_for_raw_host(host, domain)


# The same Host value repeats request after request, and normalising it each time cost 1.5 us
# of the server's ~50 us per request. Keyed by the raw value, but only a short one: a visitor can
# vary case, port and padding endlessly, which at worst evicts useful entries; the memory stays
# under 4096 short strings (the 32 KB values of issue 11 once grew the server by 130 MB).
@functools.lru_cache(maxsize=4096)
def _tunnel_id_for_raw_host(host, domain):
    name, _ = split_host(host)
    return _tunnel_id_for_name(name, domain)


def _tunnel_id_for_name(name, domain):
    if not name or _is_ip(name):
        return None
    if domain:
        suffix = "." + domain.lower().strip(".")
        if not name.endswith(suffix):
            return None
        return name[: -len(suffix)] or None
    labels = name.split(".")
    if labels[-1] == "localhost":
        registrable = 1
    elif ".".join(labels[-2:]) in _TWO_LABEL_SUFFIXES:
        registrable = 3
    else:
        registrable = 2
    return labels[0] if len(labels) > registrable else None


def client_address(peer, forwarded_for, trusted):
    """The address a request really comes from, in normal form. Only a trusted proxy's
    X-Forwarded-For counts, and in it the rightmost address that is not another trusted proxy:
    everything left of that the client itself could have written."""
    peer = normal_address(peer)
    if peer not in trusted or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return normal_address(hop)
    return normal_address(hops[0] if hops else peer)


def normal_address(text):
    """One spelling per address, so the API and a tunnel port agree on who a client is: an IPv4
    client seen through a dual-stack socket (`::ffff:203.0.113.5`) is `203.0.113.5`, and IPv6 is
    written compressed. Text that is no address is returned as it is."""
    if ":" not in text:
        # IPv4 as a socket reports it is already in its one spelling, and any other IPv4 text
        # is no address: either way it comes back unchanged. Parsing it cost 3 us per visitor
        # connection (a profile of `Connection: close` visitors).
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def token_matches(authorization, token):
    """Whether an Authorization header carries `token`: as a Bearer token (our client) or as the
    password of Basic credentials (the npm client turns https://user:TOKEN@host into those)."""
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme != "bearer":
        return False
    return hmac.compare_digest(value.encode("utf-8"), token.encode("utf-8"))


_REASONS = {
    200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Content Too Large", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


def reason(status):
    return _REASONS.get(status, "Unknown")


def error_response(status, code, message, headers=()):
    """A short plain-text error page, and the end of its connection. `code` goes in
    X-Localtunnel-Status so scripts can tell our errors from the tunnelled service's own;
    `message` says what happened and what to do; `headers` are (name, value) pairs to add
    (WWW-Authenticate, Retry-After)."""
    body = (message.rstrip() + "\n").encode("utf-8")
    lines = [
        "HTTP/1.1 %d %s" % (status, reason(status)),
        "Content-Type: text/plain; charset=utf-8",
        "Content-Length: %d" % len(body),
        "X-Localtunnel-Status: %s" % code,
        "Cache-Control: no-store",
        "Connection: close",
    ] + ["%s: %s" % pair for pair in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
