"""The inspector's web side: one static page and its JSON API, served by Flask on gevent's WSGI
server inside the client (by default on 127.0.0.1:4040, ngrok's agent's address).

  GET    /                           the page (static, works offline)
  GET    /api/requests               newest first, each with an id
  GET    /api/requests/<id>          heads, bodies (text, or base64 with a flag), times
  POST   /api/requests/<id>/replay   optional JSON edits; answers with the new entry
  DELETE /api/requests               clear the list
  GET    /api/events                 server-sent events: an entry as it begins and as it ends
"""
import json
import logging
import os
import time

from flask import Flask, Response, jsonify, request, send_from_directory
from gevent.pywsgi import WSGIServer
from gevent.queue import Empty

from . import view
from .replay import ReplayError, build_request

log = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: Seconds between comments on an idle event stream, so proxies and browsers keep it open.
HEARTBEAT = 15.0
#: Bytes of edits a replay request may carry (a body of the same size as the largest kept).
MAX_EDITS = 8 << 20


def create_app(capture, replay, hosts=None):
    """`replay(request_bytes, replay_of)` sends a request through the client's tunnel-socket loop.
    `hosts`: the Host values the page is reached by (its own address); None to take any, when
    the user asked for an address beyond loopback."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_EDITS
    allowed = None if hosts is None else frozenset(host.lower() for host in hosts)

    @app.before_request
    def from_this_page_only():
        # Any web page the user visits can make the browser send requests here. A page on
        # another Host (a DNS name rebound to 127.0.0.1) could read every captured body, and one
        # from another Origin could replay requests: both are refused.
        host = request.headers.get("Host", "").lower()
        if allowed is not None and host not in allowed:
            return _error(403, "the inspector answers only at its own address (%s)" % ", ".join(sorted(allowed)))
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != "http://" + host:
            return _error(403, "requests from other sites' pages are refused")
        return None

    @app.get("/")
    def page():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC, name)

    @app.get("/api/requests")
    def listing():
        now = time.monotonic()
        return jsonify([view.summary(exchange, now) for exchange in capture.newest_first()])

    @app.get("/api/requests/<int:number>")
    def one(number):
        exchange = capture.get(number)
        if exchange is None:
            return _error(404, "no request %d (the list keeps the last %d)" % (number, capture.limit))
        return jsonify(view.detail(exchange, time.monotonic()))

    @app.post("/api/requests/<int:number>/replay")
    def again(number):
        exchange = capture.get(number)
        if exchange is None:
            return _error(404, "no request %d to replay" % number)
        edits = request.get_json(silent=True) if request.content_length else {}
        if not isinstance(edits, dict):
            return _error(400, "edits must be a JSON object: method, path, headers, body or body_base64")
        try:
            replayed = replay(build_request(exchange, edits), number)
        except ReplayError as exc:
            return _error(exc.status, str(exc))
        return jsonify(view.detail(replayed, time.monotonic()))

    @app.delete("/api/requests")
    def clear():
        capture.clear()
        return "", 204

    @app.get("/api/events")
    def events():
        return Response(_stream(capture), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


def _stream(capture):
    listener = capture.listen()
    try:
        yield "retry: 2000\n\n"
        while not listener.dropped:
            try:
                exchange = listener.queue.get(timeout=HEARTBEAT)
            except Empty:
                yield ": still here\n\n"
                continue
            if exchange is None:
                yield "event: cleared\ndata: {}\n\n"
            else:
                yield "data: %s\n\n" % json.dumps(view.summary(exchange, time.monotonic()))
    finally:
        capture.unlisten(listener)


def _error(status, message):
    answer = jsonify({"message": message})
    answer.status_code = status
    return answer


def serve(app, listener):
    """Serve the inspector on `listener` (a bound, listening socket) in the background."""
    server = WSGIServer(listener, app, log=None, error_log=logging.getLogger("localtunnel.inspect.wsgi"))
    server.start()
    return server
