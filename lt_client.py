"""lt-client: expose a local web service at a public URL through a localtunnel server.

Usage:
  lt-client [options]
  lt-client --help
  lt-client --version

A drop-in for the npm `lt` client, with the same flags (-h is the server, --help is help).
It works against our server and the Node.js one, and never gives up on a transient error: when
the server goes away it reconnects and asks for the same name again.

Options:
  -p PORT, --port=PORT          Port of the local service to expose (required).
  -h URL, --host=URL            The tunnel server (default https://localtunnel.me).
  -s NAME, --subdomain=NAME     Ask for this name (lowercase letters, digits and dashes).
  -l HOST, --local-host=HOST    Host of the local service (default localhost); also sent to it
                                as the Host header of every request.
  --local-https                 The local service speaks HTTPS.
  --local-cert=FILE             Client certificate to present to the local HTTPS service.
  --local-key=FILE              Private key of --local-cert.
  --local-ca=FILE               CA certificate that signed the local service's certificate.
  --allow-invalid-cert          Do not verify the local service's certificate.
  -o, --open                    Open the tunnel URL in a browser once it is up.
  --print-requests              Print one line per request: time, method, path, status, duration.
  --inspect=ADDR                Serve the request inspector (a page and a JSON API listing every
                                request, with replay) on HOST:PORT, or `off` (default
                                127.0.0.1:4040, or the next free port). Bodies are visible there:
                                a non-loopback address is used only when asked, with a warning.
  --inspect-limit=N             Requests the inspector keeps, the newest (default 500).
  --inspect-body-limit=BYTES    Bytes of each request and response body it keeps; longer ones
                                are cut and marked so (default 1048576).
  --basic-auth=USER:PASS        Visitors must give this user name and password (or set
                                LT_BASIC_AUTH); the server checks it, so nothing else reaches you.
  --allow-ip=CIDRS              Only visitors from these addresses, comma-separated ranges such
                                as 203.0.113.0/24,2001:db8::/32 (the server answers others 403).
                                Both need our server: against one that ignores them (the Node
                                server) the client stops rather than run an open tunnel.
  --use-tunnel-port             Open tunnel sockets to the tunnel's own port even when the server
                                offers its public port (ours does; the Node server has only ports).
  --auth-token=TOKEN            The token a server started with --auth-token asks for (or set
                                LT_AUTH_TOKEN). Credentials in --host (http://user:TOKEN@host)
                                work too, as with the npm client.
  --log-level=LEVEL             debug, info, warning or error (default warning).
  --help                        Show this help.
  --version                     Show the version.
"""
if __name__ == "__main__":
    # First thing, before anything imports socket: one greenlet per tunnel socket, written as
    # plain blocking code.
    from gevent import monkey

    monkey.patch_all()

import base64
import datetime
import ipaddress
import json
import logging
import os
import random
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser

# The package beside this file comes first: a checkout runs its own code, installed or not.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import localtunnel  # noqa: E402

import gevent
from gevent.event import Event

from localtunnel.transfer import relay
from localtunnel.wire import protocol
from localtunnel.cli import ExitStatus, UsageError, fail, run_cooperatively, run_main
from localtunnel.inspect import app as inspector
from localtunnel.inspect.capture import Capture
from localtunnel.inspect.replay import Marked, ReplayError, replay
from localtunnel.transfer.deadlines import Deadlines, tick_for
from localtunnel.transfer.forward import FAILURES, BadResponse, DestinationDied, Limits, ResponseTimeout, forward
from localtunnel.wire.framing import request_framer
from localtunnel.wire.http11 import IDEMPOTENT_METHODS, HttpError, parse_request_head, replace_header

PROG = "lt-client"
log = logging.getLogger("localtunnel.lt_client")

#: Seconds for the tunnel API to answer one request.
API_TIMEOUT = 10
#: Seconds for a tunnel socket or a local connection to connect.
CONNECT_TIMEOUT = 10
#: Reconnect delays grow from the first to the last, doubling, with jitter so that many
#: clients of a restarted server do not all come back in the same instant.
BACKOFF_FIRST, BACKOFF_LAST = 0.5, 30.0
#: The longest a server's Retry-After makes us wait; past it a typo'd header would stall us.
RETRY_AFTER_MAX = 300.0
#: A tunnel socket that lived this long without serving anything still counts as healthy.
HEALTHY_SOCKET_AGE = 5.0


#: Bytes of a head from the server or the local service.
HEAD_LIMIT = 65536
#: Seconds the local service may take to answer, or pause mid-body; the server's bounds are shorter.
RESPONSE_TIMEOUT = 600.0
#: Seconds a request body may trail the local service's answer.
BODY_SETTLE = 1.0


def local_limits(deadlines):
    """What forward() keeps to on the way to the local service. WebSockets have no idle bound
    here: the server closes idle ones, and we follow."""
    return Limits(HEAD_LIMIT, RESPONSE_TIMEOUT, BODY_SETTLE, None, deadlines)


class Rejected(Exception):
    """The server said no (4xx): retrying will not help."""


class Unreachable(Exception):
    """The server could not be reached or answered oddly: worth retrying, not before
    `retry_after` seconds when the server said so (a 429 or 503 with Retry-After)."""

    def __init__(self, message, retry_after=0.0):
        super().__init__(message)
        self.retry_after = retry_after


class LocalDown(HttpError):
    """The local service did not accept a connection."""

    def __init__(self, what):
        super().__init__(502, what, "local-unreachable")


class Backoff:
    def __init__(self, first=BACKOFF_FIRST, last=BACKOFF_LAST):
        self.first, self.last, self.delay = first, last, first

    def next(self):
        delay = self.delay * random.uniform(0.5, 1.0)
        self.delay = min(self.last, self.delay * 2)
        return delay

    def reset(self):
        self.delay = self.first


# --- the tunnel API ---------------------------------------------------------------------------

def request_tunnel(server, name, authorization=None, rules=None):
    """Ask `server` for a tunnel named `name` (None: any), with visitor `rules` (headers) if any.
    Returns the server's JSON answer."""
    url = server + ("/" + name if name else "/?new")
    headers = {"Accept": "application/json, text/plain, */*", "User-Agent": "lt-client/" + localtunnel.__version__,
               protocol.SOCKET_UPGRADE_HEADER: "1"}   # we can open tunnel sockets through the public port
    headers.update(rules or {})
    if authorization:
        headers["Authorization"] = authorization
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=API_TIMEOUT) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise Rejected(_api_message(exc)) from None
        if exc.code in (429, 503):     # busy or rate-limited: the server says why and when
            raise Unreachable(_api_message(exc), _retry_after(exc)) from None
        raise Unreachable("the server answered %d %s" % (exc.code, exc.reason)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(str(getattr(exc, "reason", exc))) from None
    return _tunnel_info(body)


def check_rules_enforced(info, options):
    """Raise Rejected when the server did not say it enforces the visitor rules we asked for:
    a server that ignores them (the Node one) would serve the tunnel to everyone."""
    if not options.rules:
        return
    said = info.get("visitor_rules") if isinstance(info.get("visitor_rules"), dict) else {}
    missing = []
    if options.basic_auth and said.get("basic_auth") is not True:
        missing.append("--basic-auth")
    if options.allow_ip and options.allow_ip not in (said.get("allow_ip") or []):
        missing.append("--allow-ip")
    if missing:
        raise Rejected("%s does not enforce %s (the Node.js localtunnel server ignores them); not starting, "
                       "since every visitor would reach your service. Use a server that does, or run "
                       "without them." % (options.server, " and ".join(missing)))


def _api_message(exc):
    """The server's own words for a refusal: the JSON `message` (the 403 for a bad name)."""
    body = exc.read(4096).decode("utf-8", "replace")
    try:
        return json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return "the server refused the tunnel: %d %s %s" % (exc.code, exc.reason, body.strip()[:200])


def _retry_after(exc):
    value = exc.headers.get("Retry-After", "")
    return min(float(value), RETRY_AFTER_MAX) if value.isdigit() else 0.0


def _tunnel_info(body):
    try:
        info = json.loads(body)
        valid = (isinstance(info.get("id"), str) and isinstance(info.get("port"), int)
                 and isinstance(info.get("url"), str))
    except (ValueError, AttributeError):
        valid = False
    if not valid:
        raise Unreachable("the server's answer is not a localtunnel tunnel: %r" % body[:200])
    info.setdefault("max_conn_count", protocol.DEFAULT_MAX_SOCKETS)
    return info


# --- the local service ------------------------------------------------------------------------

class Local:
    """The connection to the local service behind one tunnel socket, opened only when a
    request arrives and reopened when the service closed it in between."""

    def __init__(self, options):
        self.options = options
        self.reader = None
        self.probe = None       # says whether the connection holds input we did not ask for
        self.served = 0         # requests the current connection answered
        self.proven = False     # the service keeps this connection open after a response

    def get(self, repeatable):
        """(Reader, reused?) for the next request; raises LocalDown.

        A request that cannot be sent twice (`repeatable` false: a body, or a method that is not
        idempotent) goes on a reused connection only once the service has shown it keeps
        connections open. Many dev servers answer HTTP/1.1 without `Connection: close` and close
        anyway; their close can still be on its way when we look, and a POST sent into it is lost:
        it cannot be sent again, since the service may have acted on it."""
        if self.reader is not None and (repeatable or self.proven) and not self._maybe_stale():
            return self.reader, True
        self.close()
        self.reader = relay.Reader(self._connect())
        self.probe = relay.InputProbe(self.reader.sock)
        return self.reader, False

    def answered(self, outcome):
        """After a response: keep the connection for the next request, or close it."""
        if not outcome.dst_reusable:
            self.close()    # the next request on this tunnel socket opens a fresh one
            return
        self.served += 1
        # Proof that the service keeps it open: it said so, or it already answered twice on it.
        self.proven = self.proven or self.served >= 2 or outcome.response.has_token(b"connection", b"keep-alive")

    def _maybe_stale(self):
        # Any byte waiting here is not an answer to the request we are about to send: the rest
        # of an earlier response, or an answer to a body the service read as a request. Reusing
        # the connection would hand it to the next visitor. A close (EOF) is caught too.
        return bool(self.reader.buf) or self.probe.has_input()

    def _connect(self):
        host, port = self.options.local_host, self.options.port
        try:
            sock = relay.connect((host, port), CONNECT_TIMEOUT)
        except OSError as exc:
            raise LocalDown(exc.strerror or str(exc)) from None
        if self.options.tls is None:
            return sock
        try:
            return self.options.tls.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise LocalDown("TLS handshake failed: %s" % exc) from None

    def close(self):
        if self.reader is not None:
            self.reader.sock.close()
            self.reader = self.probe = None
            self.served, self.proven = 0, False


#: What each failure of forward() on the way to the local service was, for the error page; its
#: status and code come from forward.FAILURES, the table the server answers from too.
_LOCAL_FAILURES = {
    DestinationDied: "it closed the connection without answering",
    BadResponse: "its answer is not HTTP ({why})",
    ResponseTimeout: "no answer within {seconds:g} s",
}


def local_failure(exc):
    """The HttpError a visitor gets when forward() to the local service failed with `exc`."""
    status, _, code = FAILURES[type(exc)]
    what = _LOCAL_FAILURES[type(exc)].format(why=getattr(exc, "message", ""), seconds=RESPONSE_TIMEOUT)
    return HttpError(status, what, code)


def error_page(options, error):
    """Every error page the client sends is rendered here, from an HttpError."""
    if error.code == "bad-request":     # the server sent something that is not a request
        return protocol.error_response(error.status, error.code, "Bad request: %s." % error.message)
    where = "%s:%d" % (options.local_host, options.port)
    return protocol.error_response(error.status, error.code, (
        "The localtunnel client could not get an answer from the local service at %s: %s.\n"
        "The tunnel owner should start the service, or check lt-client's --port and --local-host."
        % (where, error.message)))


def ask_local_service(remote, local, req, head, framer, options, exchange=None):
    """One request to the local service. Returns (status, whether the tunnel socket is still
    at a message boundary and may carry the next request). With an inspector's `exchange`, the
    bytes sent to the service are also handed to it."""
    # A bodiless idempotent request can go again on a fresh local connection.
    retry = framer.done and req.method in IDEMPOTENT_METHODS
    while True:
        try:
            conn, reused = local.get(retry)
            outcome = _forward(remote, conn, req, head, framer, options, exchange)
        except LocalDown as exc:
            return _answer_error(remote, options, exc)
        except (DestinationDied, BadResponse, ResponseTimeout) as exc:
            local.close()
            if isinstance(exc, DestinationDied) and reused and retry:
                retry = False   # it closed an idle keep-alive connection just as we used it
                if exchange is not None:
                    exchange.restart_request()
                continue
            return _answer_error(remote, options, local_failure(exc))
        local.answered(outcome)
        return outcome.response.status, outcome.in_sync


def _forward(remote, conn, req, head, framer, options, exchange):
    if exchange is None:
        return forward(remote, conn, req, head, framer, options.limits)
    local_sock = conn.sock
    conn.sock = relay.Tee(local_sock, exchange.take_request, exchange.request_full, exchange.skip_request)
    try:
        return forward(remote, conn, req, head, framer, options.limits)
    finally:
        conn.sock = local_sock


def _answer_error(remote, options, error):
    remote.sock.sendall(error_page(options, error))
    return error.status, False


def serve_tunnel_socket(sock, options, local=None, capture=None, buf=b""):
    """Serve requests arriving on one tunnel socket until it closes. Returns how many arrived,
    answered or not: a socket that carried a request was in use, not refused by the server,
    even if the request was malformed or the socket died under it. `local` is where requests go:
    a Local of its own unless given one (bench/python_path.py gives one without a socket).
    `capture` (the inspector's, unless it is off) sees each request and its response. `buf`:
    bytes already read from the socket (a request that came with the upgrade's answer)."""
    remote, served = relay.Reader(sock, buf), 0
    local = Local(options) if local is None else local
    capture = options.capture if capture is None else capture
    try:
        while True:
            head = remote.read_head(HEAD_LIMIT)      # idle here between requests
            if head is None:
                return served
            served += 1
            started = time.monotonic()
            req = parse_request_head(head)
            framer = request_framer(req)
            if options.host_header:
                head = replace_header(req, b"Host", options.host_header)
            if capture is None:
                status, in_sync = ask_local_service(remote, local, req, head, framer, options)
            else:
                status, in_sync = _inspected(remote, local, req, head, framer, options, capture)
            if options.print_requests:
                print_request(req, status, started)
            if not in_sync:
                return served   # only a close can end this response, or the socket is out of step
    except HttpError as exc:
        _send_quietly(sock, error_page(options, exc))
        return served
    except (OSError, relay.Closed) as exc:
        if not relay.is_expected_disconnect(exc) and not isinstance(exc, relay.Closed):
            log.warning("tunnel socket failed: %s", exc)
        return served
    finally:
        local.close()
        sock.close()


def _inspected(remote, local, req, head, framer, options, capture):
    """ask_local_service(), with the request and its response handed to the inspector."""
    exchange, status = capture.begin(req), None
    tunnel_sock = remote.sock
    remote.sock = relay.Tee(tunnel_sock, exchange.take_response, exchange.response_full, exchange.skip_response)
    try:
        status, in_sync = ask_local_service(remote, local, req, head, framer, options, exchange)
    finally:
        remote.sock = tunnel_sock
        capture.finish(exchange, status)
    return status, in_sync


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass


def print_request(req, status, started):
    print("%s %s %s %d %d ms" % (
        datetime.datetime.now().isoformat(timespec="seconds"), req.method.decode("latin-1"),
        req.target.decode("latin-1"), status, (time.monotonic() - started) * 1000), flush=True)


# --- tunnels ----------------------------------------------------------------------------------

class Registration:
    """One tunnel as the server gave it (?new): max_conn_count greenlets, each keeping a tunnel
    socket open. (The server's own record of a tunnel is server/tunnel.py's Tunnel.)"""

    def __init__(self, info, options):
        # Through the public port when the server offers it (ours does), else the tunnel's port.
        upgrade = info.get("socket_upgrade") if isinstance(info.get("socket_upgrade"), dict) else None
        if options.use_tunnel_port and info.get("port"):
            upgrade = None
        self.upgrade = upgrade if upgrade and isinstance(upgrade.get("secret"), str) else None
        port = options.server_port if self.upgrade else info["port"]
        self.address = (info.get("ip") or options.server_host, port)
        self.options = options
        self.lost = Event()
        self.slots = [gevent.spawn(self._slot) for _ in range(info["max_conn_count"])]

    def _slot(self):
        """Keep one tunnel socket open. A refused connect means the tunnel is gone; a socket the
        server keeps closing unused (it takes fewer than it advertised) is retried ever slower."""
        backoff = Backoff()
        while not self.lost.is_set():
            try:
                sock, buf = self._open()
            except OSError as exc:
                log.info("tunnel socket to %s:%d: %s", self.address[0], self.address[1], exc)
                self.lost.set()
                return
            opened = time.monotonic()
            if serve_tunnel_socket(sock, self.options, buf=buf) or time.monotonic() - opened > HEALTHY_SOCKET_AGE:
                backoff.reset()
            else:
                gevent.sleep(backoff.next())

    def _open(self):
        """(A connected tunnel socket, bytes already read from it). Raises OSError."""
        sock = relay.connect(self.address, CONNECT_TIMEOUT)     # Nagle off: responses leave at once
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if not self.upgrade:
                return sock, b""
            sock.settimeout(CONNECT_TIMEOUT)    # the upgrade's answer, like the connect, is bounded
            sock, buf = self._upgrade(sock)
            sock.settimeout(None)
            return sock, buf
        except BaseException:
            sock.close()
            raise

    def _upgrade(self, sock):
        """Turn a connection to the public port (in TLS for an https:// server, verified as the
        API's is) into a tunnel socket: the HTTP/1.1 upgrade the server offered, 101 or OSError."""
        options = self.options
        if options.server_tls is not None:
            sock = options.server_tls.wrap_socket(sock, server_hostname=options.server_host)
        sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n" % (
            self.upgrade["path"], options.server_netloc, protocol.SOCKET_PROTOCOL, protocol.SOCKET_SECRET_HEADER,
            self.upgrade["secret"])).encode("latin-1"))
        reader = relay.Reader(sock)
        head = reader.read_head(HEAD_LIMIT)
        if head is None or not head.startswith(b"HTTP/1.1 101 "):
            raise OSError("the server did not take the tunnel socket: %s" % (head or b"").split(b"\r\n", 1)[0]
                          .decode("latin-1", "replace"))
        return sock, reader.buf

    def close(self):
        self.lost.set()
        gevent.killall(self.slots)


def keep_tunnel(options):
    """Register, serve, and when the tunnel is lost register the same name again, forever.
    Returns only by raising Rejected."""
    name, backoff, announced, first = options.subdomain, Backoff(), False, True
    while True:
        try:
            info = request_tunnel(options.server, name, options.authorization, options.rules)
            check_rules_enforced(info, options)
        except Unreachable as exc:
            if not announced:
                print("%s: no tunnel from %s yet (%s); retrying" % (PROG, options.server, exc),
                      file=sys.stderr, flush=True)
                announced = True
            gevent.sleep(max(backoff.next(), exc.retry_after))
            continue
        backoff.reset()
        announced = False
        if first and options.subdomain and info["id"] != options.subdomain:
            print("%s: %s is taken; the server gave %s instead" % (PROG, options.subdomain, info["id"]),
                  file=sys.stderr, flush=True)
        name = info["id"]   # after a loss, ask for the very name we had
        announce(info, options, first)
        first = False
        registration = Registration(info, options)
        try:
            registration.lost.wait()
        finally:
            registration.close()    # also when we are stopped: every tunnel socket closes
        print("%s: connection lost, reconnecting" % PROG, file=sys.stderr, flush=True)
        announced = True    # said once; the URL line will say when it is back


def announce(info, options, first):
    print("your url is: %s" % info["url"], flush=True)
    if info.get("cached_url"):
        print("your cachedUrl is: %s" % info["cached_url"], flush=True)
    if first and options.inspector_url:
        print("inspector: %s" % options.inspector_url, flush=True)
    if first and options.open:
        webbrowser.open(info["url"])


# --- the inspector ----------------------------------------------------------------------------

#: Where the inspector listens unless told, and how many ports after it are tried when it is taken.
INSPECT_DEFAULT, INSPECT_TRIES = ("127.0.0.1", 4040), 20


def start_inspector(options):
    """Serve the inspector and capture every request for it, unless --inspect=off. Returns a
    message for the user when it could not start (the tunnel works without it)."""
    if options.inspect == "off":
        return None
    host, port = options.inspect or INSPECT_DEFAULT
    tries = 1 if options.inspect else INSPECT_TRIES
    try:
        listener = relay.listen_first_free(host, port, tries, backlog=128)
    except OSError as error:
        where = "%s:%d" % (host, port) + ("" if tries == 1 else " or the %d ports after it" % (tries - 1))
        return ("the inspector cannot listen on %s: %s; the tunnel works without it "
                "(--inspect=off says so, --inspect=HOST:PORT picks another)" % (where, error.strerror or error))
    options.capture = Capture(options.inspect_limit, options.inspect_body_limit)
    address, port = listener.getsockname()[:2]
    where = "%s:%d" % ("[%s]" % address if ":" in address else address, port)
    loopback = _is_loopback(address)
    # On loopback it answers only to its own names; beyond, the user chose who may reach it.
    hosts = [where] + ["%s:%d" % (name, port) for name in ("localhost", "127.0.0.1", "[::1]")] if loopback else None
    app = inspector.create_app(options.capture, lambda request, number: replay_captured(options, request, number),
                               hosts)
    inspector.serve(app, listener)
    options.inspector_url = "http://" + where
    if not loopback:
        print("%s: warning: the inspector listens on %s, beyond this machine: anyone who reaches it sees every "
              "request and response body, and can replay them" % (PROG, options.inspector_url),
              file=sys.stderr, flush=True)
    return None


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def replay_captured(options, request, number):
    """Send `request` (a replay of exchange `number`) to the local service as a tunnel request
    would go; returns the new exchange."""
    marked = Marked(options.capture, number)
    replay(lambda sock: serve_tunnel_socket(sock, options, capture=marked), request, RESPONSE_TIMEOUT)
    if not marked.begun:
        raise ReplayError(400, "the replayed request was not a request the client could read")
    return marked.begun[0]


# --- the command line -------------------------------------------------------------------------

class Options:
    """The command line, checked: every bad value is a UsageError naming its flag."""

    def __init__(self, args):
        self.port = _port(args["--port"])
        self.server, credentials = _server_url(args["--host"] or "https://localtunnel.me")
        self.authorization = _authorization(args["--auth-token"] or os.environ.get("LT_AUTH_TOKEN"), credentials)
        parts = urllib.parse.urlsplit(self.server)
        self.server_host, self.server_netloc = parts.hostname, parts.netloc
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)
        # Tunnel sockets through an https:// server's public port are verified like its API.
        self.server_tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.subdomain = args["--subdomain"]
        self.local_host = args["--local-host"] or "localhost"
        self.host_header = args["--local-host"].encode("idna") if args["--local-host"] else None
        self.print_requests = args["--print-requests"]
        self.open = args["--open"]
        self.tls = _tls_context(args) if args["--local-https"] else None
        self.limits = local_limits(Deadlines(tick_for(RESPONSE_TIMEOUT)))
        self.use_tunnel_port = args["--use-tunnel-port"]
        self.basic_auth = _basic_auth(args["--basic-auth"] or os.environ.get("LT_BASIC_AUTH"))
        self.allow_ip = _allow_ip(args["--allow-ip"])
        self.rules = {}
        if self.basic_auth:
            self.rules[protocol.BASIC_AUTH_HEADER] = base64.b64encode(self.basic_auth.encode("utf-8")).decode("ascii")
        if self.allow_ip:
            self.rules[protocol.ALLOW_IP_HEADER] = ",".join(self.allow_ip)
        self.inspect = _inspect_address(args["--inspect"])
        self.inspect_limit = _count(args["--inspect-limit"], "--inspect-limit", 500, 1)
        self.inspect_body_limit = _count(args["--inspect-body-limit"], "--inspect-body-limit", 1 << 20, 0)
        self.capture = None         # the inspector's, once it serves
        self.inspector_url = None


def _basic_auth(text):
    if text is None:
        return None
    try:
        protocol.split_credentials(text)    # as the server will read it
    except protocol.BadRule as exc:
        raise UsageError("--basic-auth: %s" % exc) from None
    return text


def _allow_ip(text):
    """The ranges, written as the server writes them back (so the client can check them)."""
    if text is None:
        return None
    try:
        return [str(network) for network in protocol.parse_networks(text, "--allow-ip")]
    except protocol.BadRule as exc:
        raise UsageError(str(exc)) from None


def _inspect_address(text):
    """None (the default address, or the next free port), "off", or (host, port) as asked."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return "off"
    host, colon, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError("--inspect=%s: expected HOST:PORT (such as 127.0.0.1:4040) or off" % text)
    return host, int(port)


def _count(text, flag, default, low):
    if text is None:
        return default
    if not text.strip().isdigit() or int(text) < low:
        raise UsageError("%s=%s: expected a whole number, %d or more" % (flag, text, low))
    return int(text)


def _port(text):
    if text is None:
        raise UsageError("--port is required: the port of the local service to expose")
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError("--port=%s: expected the local service's port, 1 to 65535" % text)
    return int(text)


def _server_url(text):
    """(The server URL without credentials, "user:password" from it or None)."""
    try:
        parts = urllib.parse.urlsplit(text if "://" in text else "http://" + text)
        netloc = parts.hostname and (parts.hostname if parts.port is None else "%s:%d" % (parts.hostname, parts.port))
    except ValueError:      # a port that is not a number, a broken [IPv6] literal
        netloc = None
    if not netloc or parts.scheme not in ("http", "https"):
        raise UsageError("--host=%s: expected a server URL such as https://localtunnel.me" % text)
    if ":" in parts.hostname:
        netloc = "[%s]%s" % (parts.hostname, netloc[len(parts.hostname):])     # IPv6
    credentials = None
    if parts.username is not None:
        credentials = "%s:%s" % (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return "%s://%s%s" % (parts.scheme, netloc, parts.path.rstrip("/")), credentials


def _authorization(token, credentials):
    """The Authorization header for the tunnel API: our Bearer token, or Basic credentials from
    the URL, which is what the npm client sends (servers that want a token accept both)."""
    if token:
        if not token.isascii() or not token.isprintable() or " " in token:
            raise UsageError("--auth-token: expected the server's token, printable ASCII without spaces")
        return "Bearer " + token
    if credentials:
        return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return None


def _tls_context(args):
    try:
        context = ssl.create_default_context(cafile=args["--local-ca"])
        if args["--local-cert"]:
            context.load_cert_chain(args["--local-cert"], args["--local-key"])
    except (OSError, ssl.SSLError) as exc:
        raise UsageError("--local-cert/--local-key/--local-ca: cannot load: %s" % exc) from None
    if args["--allow-invalid-cert"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def main(argv=None):
    return run_main(PROG, __doc__, argv, "warning", Options, run_until_stopped)


def run_until_stopped(options):
    """Serve until the server refuses us (exit 2), SIGTERM (0) or Ctrl-C (130)."""
    outcome = {}
    done = Event()

    def stop(status):
        outcome.setdefault("status", status)
        done.set()

    def work():
        try:
            keep_tunnel(options)
        except Rejected as exc:
            outcome["rejected"] = str(exc)
            stop(ExitStatus.USAGE)

    trouble = start_inspector(options)
    if trouble is not None:
        if options.inspect is not None:
            return fail(PROG, trouble, ExitStatus.USAGE)    # asked for this address: say so and stop
        print("%s: %s" % (PROG, trouble), file=sys.stderr, flush=True)
    gevent.signal_handler(signal.SIGTERM, stop, ExitStatus.OK)
    gevent.signal_handler(signal.SIGINT, stop, ExitStatus.INTERRUPTED)
    worker = gevent.spawn(work)
    done.wait()
    worker.kill()
    if "rejected" in outcome:
        return fail(PROG, outcome["rejected"], outcome["status"])
    return outcome["status"]


def run():
    """The `lt-client` console script."""
    run_cooperatively(main)


if __name__ == "__main__":
    sys.exit(main())
