"""The public port: read each visitor request's head, route it by Host, answer or proxy it.

Corresponds to the `server.on('request')` / `server.on('upgrade')` handlers in localtunnel/server's
server.js. Heads are read under a size and a time limit, so a slow or hostile sender holds only its
own connection. Errors become a response in one place, `_handle`.
"""
import logging
import socket
import time

from ..transfer import relay
from ..transfer.forward import Limits
from ..wire import protocol
from ..wire.framing import Fixed, request_framer
from ..wire.http11 import (
    FORWARDED_HEADERS,
    HttpError,
    forward_request_head,
    forwarded_lines,
    next_head,
    origin_form,
    parse_request_head,
    request_host,
    skip_blank_lines,
)
from . import arrival, passing, socket_route, wsgi
from .access_log import log_access
from .dispatch import send_through_tunnel
from .listeners import Ports
from .peers import Peers

log = logging.getLogger(__name__)

#: Marks a request one node passed on to another (its value: the node that did).
HOP_HEADER = b"X-Localtunnel-Hop"
#: Headers a visitor may not bring to the origin: ours to set.
_DROP = FORWARDED_HEADERS | {HOP_HEADER.lower()}
#: With a tunnel password, the visitor's Authorization was for us: it goes no further.
_DROP_AUTHORIZATION = _DROP | {b"authorization"}

#: Seconds a visitor refused for lack of room may take to send its request before the 503.
BUSY_READ = 1.0



class _HeadTimeout(Exception):
    pass


class _IdleTimeout(Exception):
    pass


class _SendTimeout(Exception):
    pass


class _Discard:
    """A sink for request bodies nobody reads (API calls)."""

    @staticmethod
    def sendall(data):
        pass


class Front:
    def __init__(self, registry, app, settings, deadlines, metrics):
        self.registry, self.app, self.settings = registry, app, settings
        self.deadlines, self.metrics = deadlines, metrics
        self.limits = Limits(settings.head_limit, settings.response_timeout, settings.body_settle,
                             settings.splice_idle_timeout, deadlines)
        # In a cluster, a visitor of a tunnel another node holds is passed on to that node.
        self.peers = Peers(registry.names, settings, self.limits) if settings.redis_url else None
        self._open = 0      # visitor connections being served
        self._ports = Ports(settings, self.peers is not None, self._handle, self._handle_node, self._handle_redirect)
        # Other nodes of this machine pass their visitors' sockets in here (passing.py).
        self._door = passing.Door(registry.names.node_id, self._handle_passed) \
            if self.peers is not None and settings.pass_sockets else None
        self._scheme = b"https" if settings.certificates is not None else b"http"

    @property
    def port(self):
        return self._ports.port

    @property
    def internal_port(self):
        """Where other nodes pass visitors on to: a port of this process alone."""
        return self._ports.internal_port

    @property
    def visitors(self):
        """Visitor connections being served now."""
        return self._open

    def start(self):
        self._ports.start()
        if self._door is not None:
            try:
                self._door.start()
            except OSError as exc:
                # Not fatal: other nodes find no door and splice their visitors to the internal port.
                log.warning("front: cannot open the socket door for nodes of this machine (%s); they will "
                            "splice visitors to the internal port instead", exc.strerror or exc)
                self._door = None
        log.info("front: serving tunnels and the API on %s:%d%s", self.settings.address, self.port,
                 " over TLS" if self.settings.certificates is not None else "")

    def stop(self, timeout=1):
        if self._door is not None:
            self._door.stop(timeout)
        self._ports.stop(timeout)

    def _handle(self, sock, addr):
        """One visitor connection on the public port (in TLS when the server has certificates)."""
        certificates = self.settings.certificates
        if certificates is None:
            self._visit(sock, addr, from_node=False)
            return
        tls = arrival.handshake(certificates, sock, addr, self.deadlines, self.settings.head_timeout)
        if tls is not None:
            try:
                self._visit(tls, addr, from_node=False)
            finally:
                tls.close()

    def _handle_redirect(self, sock, addr):
        """One connection on --http-redirect-port: plain HTTP, answered with the HTTPS address."""
        self._visit(sock, addr, from_node=False, redirect=True)

    def _handle_node(self, sock, addr):
        """One connection on the internal port: a visitor another node hands over (introduced
        by a PROXY line), or that node's own requests passed on one by one."""
        self._visit(sock, addr, from_node=True)

    def _handle_passed(self, sock, ip, buf):
        """A visitor connection another node of this machine passed in as a socket, with `buf`
        the bytes it read from it; that node said who the visitor is, as a PROXY line would."""
        self._visit(sock, None, from_node=True, passed=(ip, buf))

    def _visit(self, sock, addr, from_node, redirect=False, passed=None):
        """A visitor connection, request after request, until either side is done."""
        if self.settings.max_visitors and self._open >= self.settings.max_visitors:
            self._refuse_busy(sock)
            return
        if passed is None:      # a passed socket is the passing node's, which set it already
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        visitor = relay.Reader(sock, passed[1] if passed else b"")
        wait = self.settings.head_timeout   # the first request must come promptly
        ip = passed[0] if passed else protocol.normal_address(addr[0])   # as trusted_proxies and the API spell it
        self._open += 1
        self.metrics.visitors.inc()
        try:
            if passed is None and (from_node or ip in self.settings.trusted_proxies):
                ip = arrival.introduced(visitor, ip, self.deadlines, self.settings.head_timeout,
                                        self.peers.is_node if from_node else None)
            while True:
                req = self._next_request(visitor, wait)
                if req is None:
                    return
                if redirect:
                    if not self._redirect(visitor, req, ip):
                        return
                elif not self._serve(visitor, req, ip, may_hand_over=not from_node):
                    return
                wait = self.settings.keepalive_timeout
                if visitor.buf:
                    # Pipelined requests are served without waiting on the socket: let others
                    # run between them, or thousands sent at once hold the whole process.
                    relay.yield_to_others()
        except HttpError as exc:
            self._send_error(sock, exc)
        except _HeadTimeout:
            self._send_error(sock, HttpError(408, (
                "The request head did not arrive within %g s." % self.settings.head_timeout), "head-timeout"))
        except (relay.Closed, _SendTimeout):
            pass
        except OSError as exc:
            if not relay.is_expected_disconnect(exc):
                log.warning("front: visitor %s: %s", ip, exc)
        finally:
            self._open -= 1
            self.metrics.visitors.dec()

    def _refuse_busy(self, sock):
        # Read what the visitor sent first (briefly): closing a socket with unread bytes makes
        # the kernel send a reset, which can destroy the 503 before the visitor reads it.
        try:
            with self.deadlines.bound(BUSY_READ, _HeadTimeout):
                sock.recv(relay.BUFSIZE)
        except (_HeadTimeout, OSError):
            pass
        self._send_error(sock, HttpError(503, (
            "This server is serving its maximum of %d visitor connections.\n"
            "Try again in a moment." % self.settings.max_visitors), "busy"))

    def _next_request(self, visitor, idle):
        """The next request head, parsed; None when the visitor closed or idled out."""
        # Blank lines before a request are allowed (RFC 9112 2.2) and skipped; they neither
        # count as the head's start nor restart the idle clock.
        visitor.buf = skip_blank_lines(visitor.buf)
        if not visitor.buf:
            try:
                with self.deadlines.bound(idle, _IdleTimeout):
                    while not visitor.buf:
                        data = visitor.sock.recv(relay.BUFSIZE)
                        if not data:
                            return None
                        visitor.buf = skip_blank_lines(data)
                        if not visitor.buf:
                            relay.yield_to_others()     # a flood of blank lines moves no request
            except _IdleTimeout:
                return None
        head, rest = next_head(visitor.buf, self.settings.head_limit)
        if head is not None:    # the common case: the whole head came in one recv
            visitor.buf = rest
        else:
            with self.deadlines.bound(self.settings.head_timeout, _HeadTimeout):
                head = visitor.read_head(self.settings.head_limit)
        return parse_request_head(head) if head else None

    def _serve(self, visitor, req, ip, may_hand_over):
        host = request_host(req)
        if host is None:
            raise HttpError(400, "the request has no Host header")
        tunnel_id = protocol.tunnel_id_for_host(host, self.settings.domain)
        if tunnel_id is None:
            if req.is_upgrade and req.target.startswith(socket_route.PATH):
                self._serve_socket(visitor, req, ip, may_hand_over)
                return False
            return self._serve_api(visitor, req, ip)
        tunnel = self.registry.get(tunnel_id)
        node = None
        if tunnel is None and self.peers is not None and not self._passed_on(req, ip):
            node = self.peers.owner(tunnel_id)
        if tunnel is None and node is None:
            log_access(ip, req, 404, 0, tunnel_id, 0.0, time.monotonic(), "no-such-tunnel")
            raise HttpError(404, (
                "There is no tunnel named %s on this server.\n"
                "If it is yours, start your localtunnel client again (lt --port <port> --subdomain %s)."
                % (tunnel_id, tunnel_id)), "no-such-tunnel")
        if node is not None and may_hand_over and (req.keep_alive or req.is_upgrade):
            self._hand_over(node, visitor, req, ip, tunnel_id)
            return False
        address = drop = None
        if tunnel is not None:
            address = self._visitor_address(req, ip)
            drop = self._admit(tunnel, req, address, ip)
        framer = request_framer(req)
        extra = forwarded_lines(req, ip, host, self._trusts(ip), self._scheme)
        if node is not None:
            extra.append(HOP_HEADER + b": " + self.registry.names.node_id.encode())
        head = forward_request_head(req, extra, drop=drop or _DROP)
        started = time.monotonic()
        try:
            if tunnel is None:
                keep, outcome = self.peers.pass_on(node, visitor, req, head, framer)
            else:
                keep, outcome = send_through_tunnel(tunnel, visitor, req, head, framer, self.settings, self.limits,
                                                    address)
        except HttpError as exc:
            log_access(ip, req, exc.status, 0, tunnel_id, 0.0, started, exc.code)
            raise
        self.metrics.request(outcome.response.status, outcome.bytes_in, outcome.bytes_out, outcome.waited)
        log_access(ip, req, outcome.response.status, outcome.bytes_out, tunnel_id, outcome.waited, started)
        return keep

    def _serve_socket(self, visitor, req, ip, may_hand_over):
        """A tunnel socket through the public port. In a cluster a balancer may bring it to a
        node that does not hold its tunnel: that node hands the connection over to the one that
        does, as it would a visitor's, and the owner adopts it from its internal port."""
        tunnel_id = socket_route.tunnel_id_of(req)
        if may_hand_over and self.peers is not None and self.registry.get(tunnel_id) is None:
            node = self.peers.owner(tunnel_id)
            if node is not None:
                self._hand_over(node, visitor, req, ip, tunnel_id)
                return
        socket_route.adopt(self.registry, visitor, req, ip, self._send)

    def _redirect(self, visitor, req, ip):
        """Plain HTTP on --http-redirect-port: the API when --http-api allows it, else a 308 to
        the same URL over HTTPS (a 308 keeps the method and body of a POST)."""
        host = request_host(req)
        if host is None:
            raise HttpError(400, "the request has no Host header")
        if self.settings.http_api and protocol.tunnel_id_for_host(host, self.settings.domain) is None:
            return self._serve_api(visitor, req, ip)
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        port = "" if self.port == 443 else ":%d" % self.port
        location = "https://%s%s%s" % (name, port, origin_form(req).decode("latin-1"))
        raise HttpError(308, "This server speaks HTTPS: %s" % location, "https-only", [("Location", location)])

    def _admit(self, tunnel, req, address, ip):
        """Raise the 401 or 403 for a visitor the tunnel's gate refuses, before any tunnel socket
        is taken; returns the headers to drop (the Authorization the gate consumed) or None."""
        gate = tunnel.gate
        if gate is None:
            return None
        refusal = gate.refusal(address, req.get(b"authorization"))
        if refusal is not None:
            log_access(ip, req, refusal.status, 0, tunnel.id, 0.0, time.monotonic(), refusal.code)
            raise refusal
        return _DROP_AUTHORIZATION if gate.takes_authorization else None

    def _hand_over(self, node, visitor, req, ip, tunnel_id):
        """Give the whole connection to the node holding its tunnel: the owner alone parses
        every request on it. A connection that ends with this request is passed on instead (in
        _serve), over a kept-alive connection between the nodes rather than a new one."""
        log.debug("front: visitor %s of %s handed over to node %s", ip, tunnel_id, node.id)
        self.metrics.handed_over += 1
        try:
            if self.peers.hand_over(node, visitor, req, ip):
                self.metrics.sockets_passed += 1
        except HttpError as exc:
            log_access(ip, req, exc.status, 0, tunnel_id, 0.0, time.monotonic(), exc.code)
            raise

    def _visitor_address(self, req, ip):
        """Who a visitor is, for its share of a tunnel's sockets: behind a trusted proxy, the
        address the proxy names, or every visitor would share one share. `ip` is already in
        normal form; parsing it again per request cost 4 us."""
        if not self._trusts(ip):
            return ip
        forwarded = req.get(b"x-forwarded-for")
        if forwarded is None:
            return ip
        trusted = self.settings.trusted_proxies | self.peers.hosts if self.peers else self.settings.trusted_proxies
        return protocol.client_address(ip, forwarded.decode("latin-1"), trusted)

    def _passed_on(self, req, ip):
        """Whether another node passed this request on already: it goes no further, so a stale
        view of who holds a tunnel can never send a request round in a circle."""
        return req.get(HOP_HEADER.lower()) is not None and ip in self.peers.hosts

    def _trusts(self, ip):
        """Whether `ip` may say who a visitor is (X-Forwarded-*): a configured proxy, or in a
        cluster another live node passing its visitor on."""
        return ip in self.settings.trusted_proxies or (self.peers is not None and ip in self.peers.hosts)

    def _serve_api(self, visitor, req, ip):
        framer = request_framer(req)
        if isinstance(framer, Fixed) and framer.remaining > wsgi.MAX_API_BODY:
            raise HttpError(413, "API requests carry no body")
        with self.deadlines.bound(self.settings.head_timeout, _HeadTimeout):
            if not relay.copy_body(visitor, framer, _Discard)[0]:
                return False
        environ = wsgi.build_environ(req, ip, self.port)
        self._send(visitor.sock, wsgi.call_app(self.app, environ, req.keep_alive))
        return req.keep_alive

    def _send(self, sock, data):
        """Send a short answer whole. A visitor that pipelines requests and never reads the
        answers fills its socket buffer; it gets --head-timeout to read, then it is closed."""
        with self.deadlines.bound(self.settings.head_timeout, _SendTimeout):
            sock.sendall(data)

    def _send_error(self, sock, error):
        """Every error page the public port sends is rendered here, from an HttpError."""
        self.metrics.error(error.code)
        message = _bad_request_message(error) if error.code == "bad-request" else error.message
        try:
            self._send(sock, protocol.error_response(error.status, error.code, message, error.headers))
        except (OSError, _SendTimeout):
            pass    # the visitor left or does not read; nothing to tell them


def _bad_request_message(exc):
    if exc.status == 431:
        return "The request head is too large (%s)." % exc.message
    return "Bad request: %s." % exc.message
