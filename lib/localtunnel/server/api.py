"""The tunnel API as a Flask app: `/?new`, `/<name>`, `/api/status`, `/api/tunnels/<id>/status`.

Corresponds to the koa router in localtunnel/server's server.js (PROTOCOL.md A1-A2). It is served
twice: by gunicorn on its bind address, and in-process for root-host requests on the front port.
"""
import logging
import os
import urllib.error
import urllib.request

from flask import Flask, Response, redirect, request
from prometheus_client import CONTENT_TYPE_LATEST

from .. import __version__
from ..wire import protocol
from ..wire.http11 import HttpError
from . import gate
from .wsgi import FRONT_ENVIRON_KEY

log = logging.getLogger(__name__)


def _json(body, status=200, headers=()):
    return Response(body, status=status, content_type=protocol.JSON_TYPE, headers=list(headers))


def _refusal(error):
    """An HttpError as the API says it: JSON with a message, as the Node server does (A2)."""
    return _json(protocol.json_compact({"message": error.message}), error.status, error.headers)


def _status_from_owner(names, tunnel_id, settings):
    """/api/tunnels/<id>/status for a tunnel another node holds: that node's own answer."""
    node = names.owner(tunnel_id)
    if node is None or node.id == names.node_id:
        return Response("Not Found", 404, content_type="text/plain; charset=utf-8")
    url = "http://%s:%d/api/tunnels/%s/status" % (_url_host(node.host), node.port, tunnel_id)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": "localhost"}),
                                    timeout=settings.socket_wait) as answer:
            return _json(answer.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.read(), exc.code, content_type=exc.headers.get("Content-Type", "text/plain"))
    except OSError as exc:
        raise HttpError(502, "The node holding tunnel %s did not answer (%s)." % (tunnel_id, exc),
                        "node-unreachable") from None


def _url_host(host):
    return "[%s]" % host if ":" in host else host


def _rss_bytes():
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _public_host(settings, public_port):
    """The Host to build tunnel URLs from. Through the front port: the Host as sent (A1). Through
    gunicorn's own bind address: that Host names the wrong port, so use the front port's."""
    host = request.headers.get("Host", "")
    if request.environ.get(FRONT_ENVIRON_KEY):
        return host
    name, _ = protocol.split_host(host)
    if ":" in name:
        name = "[%s]" % name
    default_port = 443 if settings.secure else 80
    port = public_port()
    return name if port == default_port else "%s:%d" % (name, port)


def _client_address(settings):
    return protocol.client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                   settings.trusted_proxies)


def _tunnel_answer(registry, settings, admission, public_port, requested):
    address = _client_address(settings)
    try:
        admission.check(address, request.headers.get("Authorization"), requested)
        _check_socket_route(settings)
        visitor_gate = _gate(settings)
        tunnel = registry.create(requested, address)
    except HttpError as refusal:    # admission.Refusal, registry.RegistryFull, a rule we cannot read
        log.info("refused a tunnel for %s (asked for %s): %d %s", address, requested or "any",
                 refusal.status, refusal.message)
        return _refusal(refusal)
    if visitor_gate is not None:
        visitor_gate.realm = tunnel.id
    tunnel.gate = visitor_gate
    url = protocol.tunnel_url(tunnel.id, _public_host(settings, public_port), settings.secure)
    log.info("tunnel %s: created for %s (asked for %s)", tunnel.id, address, requested or "any")
    # In a cluster, `ip` sends the client's tunnel sockets to this node, whichever node a
    # balancer in front of the cluster would pick (the npm client prefers it to the host name).
    extra = {"ip": registry.names.address} if registry.names.address else {}
    if request.headers.get(protocol.SOCKET_UPGRADE_HEADER) == "1":
        # Offered to a client that said it can (ours): the npm client's answer stays the Node
        # server's, key for key, and the secret goes only where it is used.
        extra["socket_upgrade"] = {"path": protocol.SOCKET_PATH + tunnel.id, "secret": tunnel.secret}
    if visitor_gate is not None:
        # Says what is enforced: our client refuses to run a tunnel whose rules a server ignored.
        extra["visitor_rules"] = {"basic_auth": visitor_gate.credentials is not None,
                                  "allow_ip": [[str(net) for net in nets] for nets in visitor_gate.networks]}
    return _json(protocol.tunnel_info(tunnel.id, tunnel.port, tunnel.max_sockets, url, **extra))


def _check_socket_route(settings):
    """With --tunnel-ports=off, only a client that opens its sockets through the public port
    can use a tunnel: refuse the others now, saying what to use instead."""
    if not settings.tunnel_ports and request.headers.get(protocol.SOCKET_UPGRADE_HEADER) != "1":
        raise HttpError(400, "This server opens no tunnel ports (--tunnel-ports=off): tunnel sockets go "
                             "through its public port, which this client cannot do. Use lt-client "
                             "(pip install localtunnel-py), which can.")


def _gate(settings):
    """The visitor rules of a tunnel about to be created: the operator's, and those the creation
    request asks for in its rule headers (our client sends them). A 400 for one we cannot read."""
    try:
        return gate.gate_for("", settings, request.headers.get(gate.BASIC_AUTH_HEADER),
                             request.headers.get(gate.ALLOW_IP_HEADER))
    except gate.BadRule as exc:
        raise HttpError(400, str(exc)) from None


def create_app(registry, settings, metrics, admission, public_port):
    """The API app over `registry`; `settings` gives the landing page and --secure; `metrics` (a
    metrics.Metrics) is served at /metrics; `admission` decides who may create; `public_port()`
    is the port visitors use, known only once the front listens (with --port 0 the OS picks it)."""
    app = Flask("localtunnel")
    all_methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

    @app.route("/", methods=all_methods)
    def root():
        # The reference checks only for a `new` key in the query, whatever its value or method.
        if "new" in request.args:
            return _tunnel_answer(registry, settings, admission, public_port, None)
        return redirect(settings.landing, code=302)

    @app.route("/api/status")
    def status():
        # The Node server's shape, plus what an operator wants to see at a glance; in a cluster,
        # `tunnels` stays this node's and `cluster` counts every live node's.
        answer = {"tunnels": len(registry), "mem": {"rss": _rss_bytes()}, "sockets": registry.total_sockets(),
                  "uptime": round(metrics.uptime(), 1), "version": __version__}
        if registry.names.node_id is not None:
            answer["node"] = registry.names.node_id
            try:
                answer["cluster"] = registry.names.census()
            except HttpError:
                answer["cluster"] = None    # the registry is unreachable; this node still answers
        return _json(protocol.json_compact(answer))

    @app.route("/api/health")
    def health():
        """For load balancers: 200 while the process serves requests."""
        return _json('{"status":"ok"}')

    @app.route("/metrics", methods=all_methods)
    def prometheus():
        # /metrics is also a one-segment path, which the Node server reads as "a tunnel named
        # metrics". Tunnel clients ask for JSON (the npm client sends Accept: application/json);
        # Prometheus and curl do not. So a JSON request still gets its tunnel.
        if "application/json" in request.headers.get("Accept", ""):
            return _tunnel_answer(registry, settings, admission, public_port, "metrics")
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    @app.route("/api/tunnels/<tunnel_id>/status")
    def tunnel_status(tunnel_id):
        try:
            admission.check_lookup(_client_address(settings))
        except HttpError as refusal:
            return _refusal(refusal)
        tunnel = registry.get(tunnel_id)
        if tunnel is not None:
            return _json(protocol.json_compact({"connected_sockets": tunnel.connected_sockets}))
        if registry.names.node_id is not None:      # in a cluster, the node holding it knows
            try:
                return _status_from_owner(registry.names, tunnel_id, settings)
            except HttpError as error:
                return _refusal(error)
        return Response("Not Found", 404, content_type="text/plain; charset=utf-8")

    @app.route("/<name>", methods=all_methods)
    def named(name):
        if not protocol.is_valid_name(name):
            return _json(protocol.INVALID_NAME_BODY, status=403)
        return _tunnel_answer(registry, settings, admission, public_port, name)

    @app.errorhandler(404)
    def not_found(_error):
        return Response("Not Found", 404, content_type="text/plain; charset=utf-8")

    @app.errorhandler(405)
    def not_allowed(_error):
        return Response("Method Not Allowed", 405, content_type="text/plain; charset=utf-8")

    return app
