"""Pure HTTP/1.1 message framing: where the body after a head ends (RFC 9112 section 6).

A framer is fed the bytes that follow a head and says how many belong to the body and whether it
is complete. Bodies are never decoded: chunked bytes pass on unmodified. Like http11.py, nothing
here touches a socket, so framers are tested fed whole, byte by byte and in random splits.
"""
import re

from .http11 import FIELD_LINE, FIELD_VALUE_BYTE, HttpError

#: A chunk-size line or trailer line longer than this is an attack, not HTTP.
MAX_LINE = 8192
#: Trailers are rare and small; bound them like a head.
MAX_TRAILERS = 16384
#: Lines (chunk sizes, chunk ends, trailers) one feed() call handles before it returns, so a
#: body of a million 1-byte chunks is parsed in slices and the copier yields between them.
LINES_PER_FEED = 512

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# What may follow a chunk size: extensions (`;name=value`), no control byte but HTAB.
_EXTENSION = re.compile(rb"[ \t]*(?:;" + FIELD_VALUE_BYTE + rb"*)?")
_TRAILER_LINE = re.compile(FIELD_LINE)


def _content_length(head, status):
    values = head.fields.get(b"content-length")
    if not values:
        return None
    # "Content-Length: 5, 5" and repeated equal headers are legal; anything else is smuggling.
    found = {v.strip() for value in values for v in value.split(b",")}
    if len(found) != 1:
        raise HttpError(status, "conflicting Content-Length headers")
    value = found.pop()
    if not value.isdigit() or len(value) > 18:
        raise HttpError(status, "malformed Content-Length")
    return int(value)


def _is_chunked(head, status):
    codings = [c.strip().lower() for v in head.fields.get(b"transfer-encoding", ()) for c in v.split(b",")]
    if not codings:
        return None
    return codings[-1] == b"chunked"


def request_framer(req):
    """How the body after a request head ends. Ambiguous framing is refused (400), not guessed."""
    chunked = _is_chunked(req, 400)
    length = _content_length(req, 400)
    if chunked is not None:
        # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing (an HTTP/1.0 origin
        # would read the chunks as something else).
        if length is not None or not chunked or req.version == b"HTTP/1.0":
            raise HttpError(400, "ambiguous request framing (Transfer-Encoding)")
        return Chunked(400)
    return Fixed(length or 0)


def response_framer(method, resp):
    """How the body after a response head ends (RFC 9112 section 6.3)."""
    status = resp.status
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return Fixed(0)
    chunked = _is_chunked(resp, 502)
    if chunked is not None and resp.version == b"HTTP/1.0":
        return UntilClose()     # faulty framing (RFC 9112 6.1): only the close can end it
    if chunked:
        return Chunked(502)
    if chunked is None:
        length = _content_length(resp, 502)
        if length is not None:
            return Fixed(length)
    return UntilClose()


class Fixed:
    """A body of known length (Content-Length, or none at all)."""

    __slots__ = ("remaining",)
    until_close = False

    def __init__(self, length):
        self.remaining = length

    @property
    def done(self):
        return self.remaining == 0

    def feed(self, data):
        """Take what belongs to this body from the front of `data`; return how much that is."""
        take = min(self.remaining, len(data))
        self.remaining -= take
        return take


class UntilClose:
    """A response delimited by the sender closing the connection."""

    __slots__ = ()
    until_close = True
    done = False

    def feed(self, data):
        return len(data)


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class Chunked:
    """Finds the end of a chunked body without decoding it: the bytes pass on unmodified."""

    __slots__ = ("status", "_state", "_remaining", "_line", "_trailer_bytes")
    until_close = False

    def __init__(self, status):
        self.status = status            # what to answer when the chunking is broken
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0

    @property
    def done(self):
        return self._state == _DONE

    def feed(self, data):
        """Like Fixed.feed; may also stop short of a done body after LINES_PER_FEED lines (the
        caller feeds the rest next, after letting other greenlets run)."""
        pos, end, lines = 0, len(data), 0
        while pos < end and self._state != _DONE:
            if self._state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if lines == LINES_PER_FEED:
                return pos
            lines += 1
            newline = data.find(b"\n", pos, pos + MAX_LINE + 1 - len(self._line))
            if newline < 0:
                self._take_partial(data[pos:end])
                return end
            line = self._line + data[pos:newline]
            self._line = b""
            pos = newline + 1
            if not line.endswith(b"\r"):
                # Node refuses a bare LF here too: an origin that ends lines only at CRLF would
                # read what follows as another request, and answer it to the next visitor.
                raise HttpError(self.status, "chunked body line not ended by CRLF")
            self._on_line(line[:-1])
        return pos

    def _take_partial(self, piece):
        self._line += piece
        if len(self._line) > MAX_LINE:
            raise HttpError(self.status, "chunked body line too long")

    def _on_line(self, line):
        if self._state == _SIZE:
            self._on_size(line)
        elif self._state == _DATA_END:
            if line:
                raise HttpError(self.status, "chunk data longer than its size")
            self._state = _SIZE
        elif not line:
            self._state = _DONE
        else:
            self._trailer_bytes += len(line)
            if self._trailer_bytes > MAX_TRAILERS or not _TRAILER_LINE.fullmatch(line):
                raise HttpError(self.status, "malformed or oversized chunked trailers")

    def _on_size(self, line):
        size = _HEX.match(line)
        if size is None or not _EXTENSION.fullmatch(line, size.end()):
            raise HttpError(self.status, "malformed chunk size")
        self._remaining = int(size.group(), 16)
        self._state = _DATA if self._remaining else _TRAILER
