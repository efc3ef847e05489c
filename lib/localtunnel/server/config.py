"""The server's settings: one table gives each its default, its LT_* variable and its flag.

Under gunicorn the environment is the only way in; `lt-server` takes the same settings as flags,
and a flag beats the environment. Every bad value is one clear line naming where it came from.
"""
import dataclasses

from .gate import Credentials, parse_networks, split_credentials
from .tls import Certificates, TlsError

LANDING = "https://localtunnel.github.io/www/"


class ConfigError(Exception):
    """A setting has a value we cannot use; the message names the flag or variable."""


@dataclasses.dataclass
class Settings:
    port: int = 80                  # the public port: visitors and the API
    address: str = "0.0.0.0"        # where the public port and tunnel ports listen
    domain: str = None              # tunnels are <id>.<domain>; None: guess from the Host
    secure: bool = False            # tunnel URLs say https:// (TLS ends in a front proxy)
    max_sockets: int = 10           # tunnel sockets per tunnel, advertised and enforced
    landing: str = LANDING          # where GET / on the root host redirects
    connect_grace: float = 5.0      # seconds a new tunnel waits for its first socket
    grace: float = 10.0             # seconds a name is held after its last socket closes
    socket_wait: float = 10.0       # seconds a request waits for a free tunnel socket (504)
    response_timeout: float = 300.0  # seconds a tunnelled service may take to answer (504)
    head_timeout: float = 10.0      # seconds a visitor may take to send a head (408)
    head_limit: int = 32768         # bytes a head may have (431)
    keepalive_timeout: float = 75.0  # seconds an idle keep-alive visitor connection is kept
    max_visitors: int = 10000       # simultaneous visitor connections; 0: no limit
    splice_idle_timeout: float = 3600.0  # seconds an upgraded (WebSocket) connection may be silent
    max_tunnels: int = 10000        # tunnels on this server
    max_tunnels_per_address: int = 50  # tunnels one client address may hold
    new_per_minute: int = 60        # tunnel creations one address may ask for per minute (429)
    lookups_per_minute: int = 600   # /api/tunnels/<id>/status lookups per address per minute (429)
    check_client_address: bool = True  # tunnel ports take sockets only from the tunnel's creator
    auth_token: str = None          # when set, creating a tunnel needs it (401 otherwise)
    body_settle: float = 1.0        # seconds a request body may trail its response
    trusted_proxies: frozenset = frozenset({"127.0.0.1", "::1"})  # may set X-Forwarded-*
    redis_url: str = None           # redis:// or rediss:// URL: join a cluster sharing one registry
    node_address: str = None        # where clients and other nodes reach this node (with --redis)
    node_port: int = 0              # the internal port, or the first free of NODE_PORTS from it; 0: any
    lease: float = 10.0             # seconds a node stays alive in the registry without renewing
    pass_sockets: bool = True       # hand visitors to nodes of this machine as sockets (SCM_RIGHTS)
    visitor_allow_ip: tuple = None  # ip_networks every tunnel's visitors must be in (gate.py)
    visitor_basic_auth: object = None  # gate.Credentials every tunnel asks visitors for, unless its own
    tls_cert: str = None            # PEM certificate (chain) for DOMAIN and *.DOMAIN: the public port speaks TLS
    tls_key: str = None             # its private key (default: in the certificate's file)
    tls_dir: str = None             # a directory of NAME.pem + NAME.key pairs, chosen by SNI
    http_redirect_port: int = 0     # with TLS: a plain-HTTP port that redirects to HTTPS; 0: none
    http_api: bool = False          # ... and serves the API over plain HTTP there too
    certificates: object = None     # tls.Certificates, loaded from the three above
    tunnel_ports: bool = True       # a port per tunnel; off: tunnel sockets only through the public port


def _boolean(text):
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _whole(text, low, high=None):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < low or (high is not None and value > high):
        raise ValueError("expected %d to %s" % (low, high if high is not None else "any larger number"))
    return value


def _port(text):
    return _whole(text, 0, 65535)


def _positive_int(text):
    return _whole(text, 1)


def _non_negative_int(text):
    return _whole(text, 0)


def _seconds(text):
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < value < 1e9:
        raise ValueError("expected a number of seconds above 0")
    return value


def _addresses(text):
    return frozenset(part.strip() for part in str(text).split(",") if part.strip())


def _text(text):
    return str(text).strip() or None


def _redis_url(text):
    url = _text(text)
    if url is not None and not url.startswith(("redis://", "rediss://")):
        raise ValueError("expected redis://[:password@]host:port/db or rediss://...")
    return url


#: --address values that name no one address, so they cannot tell other nodes where this one is.
WILDCARDS = frozenset(("0.0.0.0", "::", "[::]", "*"))


def _token(text):
    # Clients send it in an HTTP header, where only printable ASCII survives every client intact.
    token = _text(text)
    if token is not None and (not token.isascii() or not token.isprintable() or " " in token):
        raise ValueError("expected printable ASCII without spaces")
    return token


# field -> (parser, flag); the variable is always LT_<FIELD>.
FIELDS = {
    "port": (_port, "--port"),
    "address": (_text, "--address"),
    "domain": (_text, "--domain"),
    "secure": (_boolean, "--secure"),
    "max_sockets": (_positive_int, "--max-sockets"),
    "landing": (_text, "--landing"),
    "connect_grace": (_seconds, "--connect-grace"),
    "grace": (_seconds, "--grace"),
    "socket_wait": (_seconds, "--socket-wait"),
    "response_timeout": (_seconds, "--response-timeout"),
    "head_timeout": (_seconds, "--head-timeout"),
    "head_limit": (_positive_int, "--head-limit"),
    "keepalive_timeout": (_seconds, "--keepalive-timeout"),
    "max_visitors": (_non_negative_int, "--max-visitors"),
    "splice_idle_timeout": (_seconds, "--splice-idle-timeout"),
    "max_tunnels": (_positive_int, "--max-tunnels"),
    "max_tunnels_per_address": (_positive_int, "--max-tunnels-per-address"),
    "new_per_minute": (_positive_int, "--new-per-minute"),
    "lookups_per_minute": (_positive_int, "--lookups-per-minute"),
    "check_client_address": (_boolean, "--check-client-address"),
    "auth_token": (_token, "--auth-token"),
    "trusted_proxies": (_addresses, "--trusted-proxies"),
    "redis_url": (_redis_url, "--redis"),
    "node_address": (_text, "--node-address"),
    "node_port": (_port, "--node-port"),
    "lease": (_seconds, "--lease"),
    "pass_sockets": (_boolean, "--pass-sockets"),
    "tunnel_ports": (_boolean, "--tunnel-ports"),
    "tls_cert": (_text, "--tls-cert"),
    "tls_key": (_text, "--tls-key"),
    "tls_dir": (_text, "--tls-dir"),
    "http_redirect_port": (_port, "--http-redirect-port"),
    "http_api": (_boolean, "--http-api"),
    "visitor_allow_ip": (lambda text: parse_networks(text, "expected CIDR ranges"), "--visitor-allow-ip"),
    "visitor_basic_auth": (lambda text: Credentials(*split_credentials(text)), "--visitor-basic-auth"),
}
#: Settings whose values are never repeated in an error message: they are secrets.
SECRETS = frozenset(("auth_token", "visitor_basic_auth"))


def env_name(field):
    return "LT_" + field.upper()


def _parse(field, raw, where):
    parser = FIELDS[field][0]
    try:
        return parser(raw)
    except ValueError as exc:
        shown = "(not shown)" if field in SECRETS else repr(raw)
        raise ConfigError("%s=%s: %s" % (where, shown, exc)) from None


def from_sources(environ, flags=None):
    """Settings from LT_* variables, then flags (a dict field -> raw value) on top."""
    values = {}
    for field in FIELDS:
        raw = environ.get(env_name(field))
        if raw is not None and raw != "":
            values[field] = _parse(field, raw, env_name(field))
    for field, raw in (flags or {}).items():
        if raw is not None:
            values[field] = _parse(field, raw, FIELDS[field][1])
    settings = Settings(**values)
    _tls(settings, "port" in values)
    if settings.domain:
        settings.domain = settings.domain.lower().strip(".")
    if settings.redis_url and not settings.node_address:
        if settings.address in WILDCARDS:
            raise ConfigError("--redis (LT_REDIS_URL) needs --node-address (LT_NODE_ADDRESS) when --address is "
                              "%s: the address clients and the other nodes reach this node at" % settings.address)
        settings.node_address = settings.address
    return settings


def _tls(settings, port_given):
    """Load the certificates when TLS is asked for: their errors are one line at start."""
    if not (settings.tls_cert or settings.tls_dir):
        if settings.tls_key or settings.http_redirect_port or settings.http_api:
            raise ConfigError("--tls-key, --http-redirect-port and --http-api need TLS: give --tls-cert "
                              "(LT_TLS_CERT) or --tls-dir (LT_TLS_DIR)")
        return
    try:
        settings.certificates = Certificates(settings.tls_cert, settings.tls_key, settings.tls_dir)
    except TlsError as exc:
        raise ConfigError("TLS: %s" % exc) from None
    settings.secure = True      # tunnel URLs say https://
    if not port_given:
        settings.port = 443
    if settings.http_api and not settings.http_redirect_port:
        raise ConfigError("--http-api serves the API on --http-redirect-port: give that port too")
