"""lt-server: a self-hosted localtunnel server; the npm `lt` client works against it as-is.

Usage:
  lt-server [options]
  lt-server --help
  lt-server --version

Visitors and tunnel clients both use the public port: `lt --host http://DOMAIN:PORT --port 3000`
gets a URL like http://calm-otter-42.DOMAIN:PORT. Every setting can also come from an LT_*
variable (LT_PORT, LT_DOMAIN, LT_MAX_SOCKETS, ...); a flag wins over its variable.

Options:
  -p PORT, --port=PORT          Public port for visitors and the API (default 80).
  --address=ADDR                Address the public and tunnel ports listen on (default 0.0.0.0).
  -d DOMAIN, --domain=DOMAIN    Serve tunnels as <name>.DOMAIN. Without it, the first label of
                                a host below its registrable domain is the name
                                (x.example.com, x.localhost).
  --secure                      Tunnel URLs say https:// (TLS ends in a proxy in front of us).
  --max-sockets=N               Tunnel sockets per client, advertised and enforced (default 10).
  --landing=URL                 Where GET / on the bare domain redirects
                                (default https://localtunnel.github.io/www/).
  --connect-grace=SECONDS       How long a new tunnel waits for its first socket (default 5).
  --grace=SECONDS               How long a name is kept after its last socket closes (default 10).
  --socket-wait=SECONDS         How long a request waits for a free tunnel socket before
                                504 (default 10).
  --response-timeout=SECONDS    How long a tunnelled service may take to answer before
                                504 (default 300).
  --head-timeout=SECONDS        How long a visitor may take to send a request head before
                                408 (default 10).
  --head-limit=BYTES            Largest request head before 431 (default 32768).
  --keepalive-timeout=SECONDS   How long an idle keep-alive visitor connection stays open
                                (default 75).
  --max-visitors=N              Simultaneous visitor connections, 0 for no limit (default 10000);
                                past it a visitor gets 503 at once.
  --splice-idle-timeout=SECONDS
                                How long an upgraded (WebSocket) connection may carry no bytes
                                either way before it is closed (default 3600).
  --max-tunnels=N               Tunnels on this server (default 10000).
  --max-tunnels-per-address=N   Tunnels one client address may hold (default 50).
  --new-per-minute=N            Tunnel creations one address may ask for per minute, then 429
                                with Retry-After (default 60).
  --lookups-per-minute=N        Tunnel status lookups (/api/tunnels/NAME/status) one address may
                                make per minute, then 429: names are not for enumerating
                                (default 600).
  --check-client-address=BOOL   Tunnel ports take sockets only from the address that created the
                                tunnel (default true; false for clients behind rotating NAT).
  --auth-token=TOKEN            Creating a tunnel needs this token: lt-client --auth-token, or the
                                npm client with --host https://user:TOKEN@host (default none).
  --trusted-proxies=ADDRS       Comma-separated proxy addresses whose X-Forwarded-* headers are
                                kept, or whose PROXY protocol line (an L4 balancer's send-proxy)
                                names the visitor (default 127.0.0.1,::1).
  --visitor-allow-ip=CIDRS      Every tunnel's visitors must come from these ranges (comma-
                                separated, IPv4 and IPv6); a tunnel may narrow them, not widen.
  --visitor-basic-auth=USER:PASS  Every tunnel asks its visitors for this user and password,
                                unless its client set its own (lt-client --basic-auth).
  --tunnel-ports=ON|OFF         Open a port per tunnel for its client's sockets (default on).
                                Off: only the public port is exposed; lt-client opens its
                                sockets through it, and the npm client is refused with a message.
  --tls-cert=FILE               Speak HTTPS on the public port with this certificate (PEM, for
                                DOMAIN and *.DOMAIN; the chain after it); the port defaults to
                                443 and tunnel URLs say https://.
  --tls-key=FILE                Its private key (default: in the --tls-cert file).
  --tls-dir=DIR                 Certificates as NAME.pem (or NAME.crt) beside NAME.key, chosen by
                                the name a client asks for (SNI). SIGHUP reads these files (and
                                the --tls-cert ones) again without dropping anyone.
  --http-redirect-port=PORT     With TLS, also answer plain HTTP on PORT (e.g. 80) with a
                                redirect to the same URL over HTTPS.
  --http-api                    ... and serve the API there over plain HTTP too, for clients
                                that cannot use HTTPS (their traffic is then readable).
  --redis=URL                   Join a cluster of servers sharing one tunnel registry in Redis
                                (redis://[:password@]host:port/db or rediss://...); without it
                                the server runs alone, with nothing else to install.
  --node-address=HOST           Where clients and the other nodes reach this node (default: the
                                listening address, which must then not be a wildcard).
  --node-port=PORT              The internal port other nodes hand visitors over to: PORT, or
                                under gunicorn -w N the first free of PORT..PORT+63, so a
                                firewall can allow exactly that range (default: any free port).
  --lease=SECONDS               How long the cluster keeps this node's tunnels after it stops
                                renewing, e.g. when it dies (default 10).
  --pass-sockets=ON|OFF         Nodes of one machine (gunicorn -w N) hand a visitor to the node
                                holding its tunnel by passing the connection itself over a Unix
                                socket, not through the internal port (default on; off: always
                                the internal port, as between machines).
  --log-level=LEVEL             debug, info, warning or error (default info).
  --help                        Show this help.
  --version                     Show the version.

Under gunicorn, run exactly one gevent worker (or, with LT_REDIS_URL, -w N: each worker a node
of one cluster), settings from LT_* variables:
  LT_PORT=8080 LT_DOMAIN=localhost gunicorn -k gevent lt_server:app
"""
if __name__ == "__main__":
    # First thing, before anything imports socket: the whole server is cooperative.
    from gevent import monkey

    monkey.patch_all()

import os
import signal
import sys

# The package beside this file comes first: a checkout runs its own code, installed or not.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import gevent
from gevent.event import Event

from localtunnel.server import config, under_gunicorn
from localtunnel.cli import ExitStatus, fail, run_cooperatively, run_main
from localtunnel.server.listeners import BindError
from localtunnel.server.root import Server

PROG = "lt-server"


def _flags(args):
    """docopt's answers -> {setting: raw value} for the flags actually given."""
    flags = {}
    for field, (_parser, flag) in config.FIELDS.items():
        value = args.get(flag)
        if value not in (None, False):
            flags[field] = "true" if value is True else value
    return flags


def main(argv=None):
    return run_main(PROG, __doc__, argv, "info", lambda args: config.from_sources(os.environ, _flags(args)),
                    serve, (config.ConfigError,))


def start_server(settings):
    """A Server listening on its public port; raises BindError, with advice, when it cannot."""
    server = Server(settings)
    server.start()
    return server


def serve(settings):
    try:
        server = start_server(settings)
    except BindError as exc:
        return fail(PROG, exc, ExitStatus.ERROR)
    stopping = Event()
    if settings.certificates is not None:
        # certbot and acme.sh renew files in place: read them again, keep every connection.
        gevent.signal_handler(signal.SIGHUP, settings.certificates.reload)
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    print("%s: listening on %s:%d" % (PROG, settings.address, server.port), flush=True)
    stopping.wait()
    server.stop()
    return ExitStatus.OK


def run():
    """The `lt-server` console script."""
    run_cooperatively(main)


# --- gunicorn -k gevent lt_server:app ---------------------------------------------------------

_app = None


def __getattr__(name):
    # PEP 562: gunicorn does getattr(lt_server, "app"). Building it lazily means importing this
    # module (tests, the console script) never opens ports; only the worker that asks does.
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = under_gunicorn.build_app(start_server)
    return _app


if __name__ == "__main__":
    sys.exit(main())
