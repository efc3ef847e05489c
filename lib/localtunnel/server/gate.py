"""Who may visit a tunnel (issue 16, part 1): an address allow-list and a Basic-auth password,
asked for by our client when it creates the tunnel and defaulted by the operator for every
tunnel. Checked on the front before a request takes a tunnel socket, so a refused visitor
reaches nothing on the tunnel owner's machine.

The password is kept only as a salted hash: HMAC-SHA256 of "user:password" under a random
per-gate key. A slow KDF would cost every request its time (browsers send the header with each
one), so the hash is fast; what makes wrong users and wrong passwords cost the same is that both
are one comparison of one digest of the whole credential.
"""
import base64
import binascii
import hashlib
import hmac
import ipaddress
import os

from ..wire.http11 import HttpError
from ..wire.protocol import (  # noqa: F401  (BadRule and parse_networks are this module's API too)
    ALLOW_IP_HEADER,
    BASIC_AUTH_HEADER,
    MAX_RULE_TEXT,
    BadRule,
    parse_networks,
    split_credentials,
)

class Credentials:
    """A user and password, remembered only as a salted digest of both."""

    __slots__ = ("_key", "_digest")

    def __init__(self, user, password):
        self._key = os.urandom(32)
        self._digest = self._hash(("%s:%s" % (user, password)).encode("utf-8"))

    def _hash(self, credential):
        return hmac.new(self._key, credential, hashlib.sha256).digest()

    def admit(self, authorization):
        """Whether an Authorization header value carries these credentials."""
        credential = _basic_credential(authorization)
        # Always one digest and one constant-time comparison, whatever is wrong with it.
        return hmac.compare_digest(self._hash(credential or b"\0"), self._digest) and credential is not None


def _basic_credential(authorization):
    if authorization is None or len(authorization) > MAX_RULE_TEXT:
        return None
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


class Gate:
    """A tunnel's rules: every network list must admit the visitor's address (the operator's and
    the tunnel's own: a tunnel can narrow the operator's list, never widen it), and the password,
    when there is one (the tunnel's own, else the operator's), must be given."""

    __slots__ = ("realm", "networks", "credentials")

    def __init__(self, realm, networks=(), credentials=None):
        self.realm = realm
        self.networks = tuple(networks)     # each a tuple of ip_network
        self.credentials = credentials

    def refusal(self, address, authorization):
        """None to let the request through, else the HttpError the visitor gets."""
        if self.networks and not self._admits(address):
            return HttpError(403, (
                "Your address (%s) may not visit tunnel %s: its owner or this server allows only some "
                "addresses." % (address, self.realm)), "address-not-allowed")
        if self.credentials is not None and not self.credentials.admit(authorization):
            realm = self.realm.replace("\\", "").replace('"', "")
            return HttpError(401, (
                "Tunnel %s asks for a user name and password; your browser asks you for them." % self.realm),
                "auth-required", [("WWW-Authenticate", 'Basic realm="%s", charset="UTF-8"' % realm)])
        return None

    def _admits(self, address):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return all(any(ip in network for network in networks) for networks in self.networks)

    @property
    def takes_authorization(self):
        """Whether the visitor's Authorization header is ours: it is not sent on to the service."""
        return self.credentials is not None


def gate_for(tunnel_id, settings, basic_auth=None, allow_ip=None):
    """The Gate for a new tunnel from its creation request's rule headers (text or None) and the
    operator's defaults; None when no rule applies, which costs a request nothing. Raises
    BadRule (a 400 for the client) for a rule it cannot read."""
    networks = [settings.visitor_allow_ip] if settings.visitor_allow_ip else []
    if allow_ip is not None:
        networks.append(parse_networks(_bounded(allow_ip, ALLOW_IP_HEADER), ALLOW_IP_HEADER))
    credentials = settings.visitor_basic_auth
    if basic_auth is not None:
        try:
            user, password = split_credentials(
                base64.b64decode(_bounded(basic_auth, BASIC_AUTH_HEADER), validate=True).decode("utf-8"))
        except (binascii.Error, ValueError):
            raise BadRule("%s: expected base64 of USER:PASS, both non-empty" % BASIC_AUTH_HEADER) from None
        credentials = Credentials(user, password)
    if not networks and credentials is None:
        return None
    return Gate(tunnel_id, networks, credentials)


def _bounded(text, what):
    if len(text) > MAX_RULE_TEXT:
        raise BadRule("%s: longer than %d characters" % (what, MAX_RULE_TEXT))
    return text.strip()
