"""Pure HTTP/1.1 heads: bytes in, facts out (in the manner of h11).

Node's localtunnel server pipes whole visitor connections and never parses HTTP; we parse just
enough to share tunnel sockets per request (PROTOCOL.md B4): where a head ends, what it says,
and the few changes a proxy makes to it. Where the body after a head ends is framing.py's job.
Nothing here touches a socket, so every function can be fed a head whole or in pieces.
"""
import re

HEAD_END = b"\r\n\r\n"
#: Header lines a request head may have (431 past it). Real requests have a few dozen; thousands
#: of empty ones fit in the byte limit and cost milliseconds of CPU each to parse.
MAX_REQUEST_FIELDS = 100
#: The same for a response from a tunnel (502 past it); responses carry more, e.g. Set-Cookie.
MAX_RESPONSE_FIELDS = 256


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
# Request targets: visible ASCII only; a space or control byte means a broken or hostile sender.
_TARGET = re.compile(rb"[\x21-\x7e]+")
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection"))
#: Methods safe to send twice (RFC 9110 9.2.2): a request of these, without a body, that died
#: before any answer may be sent again on another connection.
IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class HttpError(Exception):
    """An answer that ends an exchange, raised wherever a request is refused or cannot be served:
    the `status`, the X-Localtunnel-Status `code` that tells our answers from a service's own, a
    `message` for a person, and extra `headers` (Retry-After, WWW-Authenticate). Each end renders
    it in one place. The default code is for bad input from a peer: `status` is then what the
    side that read it answers with."""

    def __init__(self, status, message, code="bad-request", headers=()):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, list(headers)


class Head:
    """A parsed head: start line parts, raw header lines as sent, and a lowercase index."""

    __slots__ = ("start", "lines", "fields")

    def __init__(self, start, lines, fields):
        self.start = start      # (method, target, version) or (version, status, reason)
        self.lines = lines      # header lines exactly as sent, without CRLF
        self.fields = fields    # lowercase name -> list of stripped values

    def get(self, name, default=None):
        values = self.fields.get(name)
        return values[-1] if values else default

    def has_token(self, name, token):
        """Whether a comma-separated header (Connection, Upgrade...) lists `token`."""
        for value in self.fields.get(name, ()):
            if token in (part.strip().lower() for part in value.split(b",")):
                return True
        return False

    @property
    def keep_alive(self):
        """Whether the sender means the connection to stay open after this message (each kind
        of head says where its version is)."""
        if self.version == b"HTTP/1.0":
            return self.has_token(b"connection", b"keep-alive")
        return not self.has_token(b"connection", b"close")


class Request(Head):
    __slots__ = ()
    method = property(lambda self: self.start[0])
    target = property(lambda self: self.start[1])
    version = property(lambda self: self.start[2])

    @property
    def is_upgrade(self):
        return b"upgrade" in self.fields and self.has_token(b"connection", b"upgrade")


class Response(Head):
    __slots__ = ()
    version = property(lambda self: self.start[0])
    status = property(lambda self: self.start[1])


def find_head_end(buf, start=0):
    """Index just past the blank line that ends a head in `buf`, or -1 if it is not there yet.

    `start` lets a reader resume the search without rescanning what it already scanned."""
    at = buf.find(HEAD_END, max(0, start - 3))
    return -1 if at < 0 else at + 4


def skip_blank_lines(buf):
    """`buf` without the empty lines a head may follow (RFC 9112 2.2: a robust server ignores
    at least one before a request line)."""
    return buf.lstrip(b"\r\n")


def next_head(buf, limit, scanned=0):
    """The receive side of a connection, for heads: bytes in, a complete head out.

    Returns (head, rest): the head at the front of `buf`, blank line included, and the bytes
    after it; or (None, buf) while its end has not arrived, `buf` then stripped of blank lines
    before the head. A reader that appends more bytes and asks again passes `scanned`, the
    length of what it asked about last time, so the search resumes instead of starting over.
    Raises HttpError(431) once the head is larger than `limit` bytes."""
    if not scanned:
        buf = buf.lstrip(b"\r\n")     # skip_blank_lines, without a call on every head
    end = buf.find(HEAD_END, max(0, scanned - 3))
    end = -1 if end < 0 else end + 4    # find_head_end, likewise
    if end > limit or (end < 0 and len(buf) > limit):
        raise HttpError(431, "the request head is larger than %d bytes" % limit)
    if end < 0:
        return None, buf
    return buf[:end], buf[end:]


#: A byte a field value may hold: anything but a control byte, HTAB excepted (NUL, ESC, a bare CR
#: or LF: what smuggles a request or reaches a terminal raw). A regex character class.
FIELD_VALUE_BYTE = rb"[^\x00-\x08\x0a-\x1f\x7f]"
#: One header (or chunked trailer) line without its CRLF: `name:value`, the name a token. It
#: refuses obs-fold (a line starting with whitespace) and "Name : value" too.
FIELD_LINE = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:" + FIELD_VALUE_BYTE + rb"*"
# Every header line at once, in one C-level pass.
_FIELD_BLOCK = re.compile(rb"(?:" + FIELD_LINE + rb"\r\n)*")


def _split_head(head, status, max_fields, too_many):
    """(start line, header lines) of a head, after checking every header line's form."""
    text = head.rstrip(b"\r\n")
    start, _, block = text.partition(b"\r\n")
    if not block:
        return start, []
    # Counted in C before any per-line work; a line takes at least 4 bytes (`x:` and CRLF), so
    # a short block, nearly every head, cannot hold too many.
    if len(block) >= 4 * max_fields and block.count(b"\n") >= max_fields:
        raise HttpError(too_many, "more than %d header lines" % max_fields)
    if not _FIELD_BLOCK.fullmatch(block + b"\r\n"):
        raise HttpError(status, "malformed header line")
    return start, block.split(b"\r\n")


def _parse_fields(lines):
    fields = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields.setdefault(name.lower(), []).append(value.strip(b" \t"))
    return fields


def parse_request_head(head):
    """Parse a request head (ending in the blank line or not). Raises HttpError(400)."""
    start, lines = _split_head(head, 400, MAX_REQUEST_FIELDS, 431)
    parts = start.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise HttpError(400, "malformed request line")
    if not _VERSION.fullmatch(version):
        raise HttpError(505 if version.startswith(b"HTTP/") else 400, "unsupported HTTP version")
    return Request((method, target, version), lines, _parse_fields(lines))


def parse_response_head(head):
    """Parse a response head from a tunnel. Raises HttpError(502): the tunnel is at fault."""
    start, lines = _split_head(head, 502, MAX_RESPONSE_FIELDS, 502)
    parts = start.split(b" ", 2)
    if len(parts) < 2 or not _VERSION.fullmatch(parts[0]):
        raise HttpError(502, "the tunnel sent something that is not an HTTP response")
    if len(parts[1]) != 3 or not parts[1].isdigit():
        raise HttpError(502, "the tunnel sent a response with a malformed status")
    reason = parts[2] if len(parts) == 3 else b""
    return Response((parts[0], int(parts[1]), reason), lines, _parse_fields(lines))


def _authority(req):
    """The authority of an absolute-form target (`GET http://h:8/p`), or None for origin-form."""
    if not req.target.startswith((b"http://", b"https://")):
        return None
    authority = req.target.split(b"/", 3)[2]
    if not authority or b"@" in authority:
        raise HttpError(400, "malformed absolute-form request target")
    return authority


def request_host(req):
    """The Host a request is for: the authority of an absolute-form target, which wins over any
    Host header (RFC 9112 3.2.2), else its Host header."""
    hosts = req.fields.get(b"host", ())
    if len(hosts) > 1:
        raise HttpError(400, "more than one Host header")
    if req.target[:1] != b"/":      # origin-form, nearly every request, names no authority
        authority = _authority(req)
        if authority is not None:
            return authority.decode("latin-1")
    return hosts[0].decode("latin-1") if hosts else None


def origin_form(req):
    """The path of an absolute-form target (`GET http://h/p`), which origin servers may reject."""
    if req.target.startswith((b"http://", b"https://")):
        rest = req.target.split(b"/", 3)
        return b"/" + rest[3] if len(rest) == 4 else b"/"
    return req.target


def forward_request_head(req, extra_lines=(), drop=frozenset()):
    """The request head to send on, ending in the blank line.

    Connection and its friends are hop-by-hop: they describe the visitor's connection, not the
    tunnel socket, so they are dropped (a visitor's `Connection: close` must not make the local
    service close a shared tunnel socket). An Upgrade keeps them: the origin needs to see it.
    An absolute-form target goes on in origin-form with the Host it named: we routed by that
    authority, so the origin must not see another Host (a poisoned password-reset link).
    Headers whose lowercase names are in `drop` are left out; `extra_lines` are appended."""
    keep_hop = req.is_upgrade
    if req.target[:1] == b"/":      # origin-form, nearly every request: no authority to look at
        out = [b" ".join(req.start)]
    else:
        out, drop = _from_absolute_form(req, drop)
    for line in req.lines:
        name = line.split(b":", 1)[0].lower()
        if name in drop or (name in _HOP_BY_HOP and not keep_hop):
            continue
        out.append(line)
    out.extend(extra_lines)
    out.append(b"\r\n")
    return b"\r\n".join(out)


def raw_request_head(req):
    """The head exactly as it was sent, ending in the blank line: request lines are parsed from
    single-space separated parts and header lines are kept as sent."""
    return b"\r\n".join((b" ".join(req.start), *req.lines, b"\r\n"))


#: The X-Forwarded-* headers a visitor sends, replaced or extended by forwarded_lines().
FORWARDED_HEADERS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"))


def forwarded_lines(req, peer, host, trusted, scheme=b"http"):
    """The X-Forwarded-* lines a request goes on with (PROTOCOL.md B5). A `trusted` proxy's values
    are kept, its For list extended with `peer` (the address it connected from); anyone else's
    are replaced, since they could be forged. `host` is the Host the request is for; `scheme`
    what the visitor's connection to us speaks (https when we end TLS ourselves)."""
    prior_for = req.get(b"x-forwarded-for") if trusted else None
    proto = req.get(b"x-forwarded-proto") if trusted else None
    forwarded_host = req.get(b"x-forwarded-host") if trusted else None
    lines = [
        b"X-Forwarded-For: " + (prior_for + b", " if prior_for else b"") + peer.encode(),
        b"X-Forwarded-Proto: " + (proto or scheme),
        b"X-Forwarded-Host: " + (forwarded_host or host.encode("latin-1")),
    ]
    if req.version == b"HTTP/1.0" and not req.is_upgrade:
        # Keep the shared tunnel socket open behind an HTTP/1.0 visitor.
        lines.append(b"Connection: keep-alive")
    return lines


def _from_absolute_form(req, drop):
    """The start of a forwarded head for a target such as `http://h/p`: the request line in
    origin-form and the Host it named; and `drop` extended by the Host lines the sender wrote."""
    authority = _authority(req)
    if authority is None:       # `*` (OPTIONS) or another form we pass on as it is
        return [b" ".join(req.start)], drop
    method, _, version = req.start
    return [b" ".join((method, origin_form(req), version)), b"Host: " + authority], drop | {b"host"}


def replace_header(req, name, value):
    """The request head, blank line included, with every `name` header set to `value` in place
    (the client's --local-host). Everything else, hop-by-hop headers too, stays as sent."""
    lowered = name.lower()
    out = [b" ".join(req.start)]
    for line in req.lines:
        if line.split(b":", 1)[0].lower() == lowered:
            line = name + b": " + value
        out.append(line)
    out.append(b"\r\n")
    return b"\r\n".join(out)


def closing_response_head(raw):
    """A response head, blank line included, whose Connection header says close.

    Connection is hop-by-hop: when the proxy is going to close the visitor's connection after
    this response, it must say so, or a keep-alive client sends its next request into a
    closing socket."""
    lines = raw.rstrip(b"\r\n").split(b"\r\n")
    kept = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    return b"\r\n".join([lines[0], *kept, b"Connection: close", b"\r\n"])
