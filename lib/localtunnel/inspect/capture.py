"""What the inspector keeps of each request the client relays: references to the bytes already
on their way, nothing parsed or decoded until the page asks (view.py does that).

The counterpart of ngrok's agent-side request log. Two bounds hold whatever the traffic: the
last `limit` exchanges, and of each direction's bytes only the first `body_limit` (plus the
head); past a store-wide budget the oldest exchanges lose their bodies first.
"""
import collections
import time

from gevent.queue import Full, Queue

#: Bytes of a head kept beyond --inspect-body-limit: the client reads heads of at most 64 KiB.
HEAD_ROOM = 65536
#: Bytes of bodies kept across all exchanges. 500 exchanges of 1 MiB each way would be 1 GiB;
#: past this the oldest exchanges keep their heads and lose their bodies.
BUDGET = 64 << 20
#: Events a page that stops reading may fall behind before it is dropped (it reloads the list).
LISTENER_BACKLOG = 1000


class Exchange:
    """One request and its response, as they went to and came from the local service."""

    __slots__ = ("id", "wall", "started", "method", "target", "request", "response", "request_size",
                 "response_size", "status", "first_byte", "finished", "replay_of", "upgraded", "evicted",
                 "_room", "_request_kept", "_response_kept")

    def __init__(self, number, req, room, replay_of):
        self.id = number
        self.wall = time.time()
        self.started = time.monotonic()
        self.method, self.target = req.method, req.target
        self.request, self.response = [], []    # chunks exactly as sent, heads included
        self.request_size = self.response_size = 0     # bytes that went, kept or not
        self._request_kept = self._response_kept = 0
        self.status = None
        self.first_byte = self.finished = None  # monotonic times: first response byte, the end
        self.replay_of = replay_of
        self.upgraded = False   # a 101: what follows is another protocol, not captured
        self.evicted = False    # bodies dropped to keep the store within its budget
        self._room = room

    def take_request(self, data):
        size = len(data)
        self.request_size += size
        kept = self._request_kept
        if kept + size <= self._room and type(data) is bytes and not self.upgraded:
            self.request.append(data)   # the common case, by reference: called for every send
            self._request_kept = kept + size
        elif kept < self._room and not self.upgraded:
            self._request_kept += _keep(self.request, data, self._room - kept)

    def restart_request(self):
        """The request goes again on a fresh connection (the reused one had closed): keep it once."""
        self.request, self.request_size, self._request_kept = [], 0, 0

    def take_response(self, data):
        if self.first_byte is None:
            self.first_byte = time.monotonic()
            self.upgraded = data[:5] == b"HTTP/" and data[9:12] == b"101"
            if self.upgraded:
                self.status = 101   # shown now: the exchange lasts as long as the WebSocket
        size = len(data)
        self.response_size += size
        kept = self._response_kept
        if self.upgraded and self.response:
            return      # the handshake is kept; what follows is the WebSocket's, not ours
        if kept + size <= self._room and type(data) is bytes:
            self.response.append(data)
            self._response_kept = kept + size
        elif kept < self._room:
            self._response_kept += _keep(self.response, data, self._room - kept)

    def request_full(self):
        return self._request_kept >= self._room

    def response_full(self):
        return self._response_kept >= self._room

    def skip_request(self, count):
        """Bytes that went to the service without passing through take_request (spliced once
        the capture was full): counted, not kept."""
        self.request_size += count

    def skip_response(self, count):
        self.response_size += count

    @property
    def kept(self):
        return self._request_kept + self._response_kept

    def drop_bodies(self):
        self.request, self.response = _heads_only(self.request), _heads_only(self.response)
        self._request_kept = sum(len(chunk) for chunk in self.request)
        self._response_kept = sum(len(chunk) for chunk in self.response)
        self.evicted = True


def _keep(chunks, data, room):
    """Append `data`, or as much of it as `room` allows; by reference when it is whole bytes (a
    memoryview may pin a much larger buffer, so only its own bytes are copied). Returns the
    bytes kept."""
    piece = data if type(data) is bytes and len(data) <= room else bytes(data[:room])
    chunks.append(piece)
    return len(piece)


class Capture:
    """The exchanges kept, oldest first, and the pages listening for new ones."""

    def __init__(self, limit=500, body_limit=1 << 20, budget=BUDGET):
        self.limit, self.body_limit, self.budget = limit, body_limit, budget
        self._entries = collections.OrderedDict()   # id -> Exchange
        self._kept = 0          # bytes held by finished exchanges
        self._next = 1
        self._listeners = set()

    def begin(self, req, replay_of=None):
        exchange = Exchange(self._next, req, self.body_limit + HEAD_ROOM, replay_of)
        self._next += 1
        self._entries[exchange.id] = exchange
        if len(self._entries) > self.limit:
            _, oldest = self._entries.popitem(last=False)
            if oldest.finished is not None:
                self._kept -= oldest.kept
        if self._listeners:
            self._tell(exchange)
        return exchange

    def finish(self, exchange, status):
        exchange.status = status
        exchange.finished = time.monotonic()
        if self._entries.get(exchange.id) is exchange:
            self._kept += exchange._request_kept + exchange._response_kept
            if self._kept > self.budget:
                self._within_budget()
        if self._listeners:
            self._tell(exchange)

    def _within_budget(self):
        for exchange in self._entries.values():
            if self._kept <= self.budget:
                return
            if exchange.finished is not None and not exchange.evicted:
                self._kept -= exchange.kept
                exchange.drop_bodies()
                self._kept += exchange.kept

    def get(self, number):
        return self._entries.get(number)

    def newest_first(self):
        return reversed(list(self._entries.values()))

    def clear(self):
        self._entries.clear()
        self._kept = 0
        self._tell(None)

    def listen(self):
        listener = Listener()
        self._listeners.add(listener)
        return listener

    def unlisten(self, listener):
        self._listeners.discard(listener)

    def _tell(self, exchange):
        if not self._listeners:
            return      # the common case: no page open, nothing to do
        for listener in list(self._listeners):
            try:
                listener.queue.put_nowait(exchange)
            except Full:
                # A page that stopped reading: its stream ends, and the browser reconnects and
                # reads the list afresh.
                listener.dropped = True
                self._listeners.discard(listener)


class Listener:
    """A page's feed: exchanges as they begin and finish (None: the list was cleared)."""

    __slots__ = ("queue", "dropped")

    def __init__(self):
        self.queue = Queue(LISTENER_BACKLOG)
        self.dropped = False


def _heads_only(chunks):
    data = b"".join(chunks)
    end = data.find(b"\r\n\r\n")
    return [data[:end + 4]] if end >= 0 else []
