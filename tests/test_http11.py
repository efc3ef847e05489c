"""The pure HTTP modules, http11 (heads) and framing (bodies): fed whole, byte by byte, in random
splits, and by hypothesis."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from localtunnel.wire import framing, http11
from localtunnel.wire.framing import Chunked, Fixed, UntilClose, request_framer, response_framer
from localtunnel.wire.http11 import (
    HttpError, find_head_end, forward_request_head, next_head, parse_request_head, parse_response_head,
    request_host,
)


def splits(data, seed=0):
    """The same bytes cut every way that matters: whole, per byte, and at random points."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6)))) if len(data) > 1 else []
        bounds = [0] + cuts + [len(data)]
        yield [data[a:b] for a, b in zip(bounds, bounds[1:])]


def consume(framer, pieces):
    """Feed pieces until the framer is done; return (body bytes, leftover bytes)."""
    body, leftover = b"", b""
    for piece in pieces:
        while piece and not framer.done:
            used = framer.feed(piece)      # a chunked framer may stop short, as copy_body sees
            body += piece[:used]
            piece = piece[used:]
        leftover += piece
    return body, leftover


# --- heads ------------------------------------------------------------------------------------

def test_parses_request_line_and_headers():
    req = parse_request_head(b"GET /a?b=1 HTTP/1.1\r\nHost: x.localhost\r\nX-A:  1 \r\nx-a: 2\r\n\r\n")
    assert (req.method, req.target, req.version) == (b"GET", b"/a?b=1", b"HTTP/1.1")
    assert req.get(b"host") == b"x.localhost"
    assert req.fields[b"x-a"] == [b"1", b"2"]
    assert req.lines == [b"Host: x.localhost", b"X-A:  1 ", b"x-a: 2"]


@pytest.mark.parametrize("head, status", [
    (b"GET /\r\n\r\n", 400),                                    # no version
    (b"GET  / HTTP/1.1\r\n\r\n", 400),                          # double space
    (b"G@T / HTTP/1.1\r\n\r\n", 400),                           # bad method token
    (b"GET /a b HTTP/1.1\r\n\r\n", 400),                        # space in target
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / FTP/1.0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),               # space before colon
    (b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", 400),        # obs-fold
    (b"GET / HTTP/1.1\r\nA: 1\x002\r\n\r\n", 400),              # NUL
    (b"GET / HTTP/1.1\r\nA: \x1b[31mred\r\n\r\n", 400),         # ESC: terminal escapes in logs
    (b"GET / HTTP/1.1\r\nA: 1\x7f\r\n\r\n", 400),               # DEL
    (b"GET / HTTP/1.1\r\nA: 1\r2\r\n\r\n", 400),                # bare CR
    (b"GET / HTTP/1.1\r\n" + b"a:\r\n" * 101 + b"\r\n", 431),     # too many header lines
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello on the HTTP port
])
def test_rejects_malformed_request_heads(head, status):
    with pytest.raises(HttpError) as info:
        parse_request_head(head)
    assert info.value.status == status


def test_header_line_limit_is_exact_for_the_shortest_lines():
    # The count is skipped for blocks too short to hold too many lines: the boundary must hold
    # for the shortest possible line, `a:`.
    assert len(parse_request_head(b"GET / HTTP/1.1\r\n" + b"a:\r\n" * 100 + b"\r\n").lines) == 100
    assert len(parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"a:\r\n" * 256 + b"\r\n").lines) == 256
    with pytest.raises(HttpError) as info:
        parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"a:\r\n" * 257 + b"\r\n")
    assert info.value.status == 502


def test_response_head_and_garbage_from_a_tunnel():
    resp = parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n")
    assert resp.status == 404 and resp.get(b"content-length") == b"3"
    assert parse_response_head(b"HTTP/1.0 200\r\n\r\n").status == 200
    for garbage in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n", b"\xff\xfe\r\n\r\n"):
        with pytest.raises(HttpError) as info:
            parse_response_head(garbage)
        assert info.value.status == 502


def test_find_head_end_resumes_across_pieces():
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"
    for pieces in splits(data):
        buf, scanned, end = b"", 0, -1
        for piece in pieces:
            buf += piece
            end = find_head_end(buf, scanned)
            if end >= 0:
                break
            scanned = len(buf)
        assert end == len(data) - 4


def heads_of(pieces, limit=1024):
    """What a reader gets from next_head when the bytes arrive in `pieces`: the heads, then
    what is left after the last one."""
    heads, buf, scanned = [], b"", 0
    for piece in pieces:
        buf += piece
        while True:
            head, buf = next_head(buf, limit, scanned)
            if head is None:
                scanned = len(buf)
                break
            heads.append(head)
            scanned = 0
    return heads, buf


def test_next_head_cuts_pipelined_heads_the_same_in_every_split():
    first, second = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n"
    # Blank lines before a head are skipped (RFC 9112 2.2), bytes after the last head kept.
    data = b"\r\n\r\n" + first + b"\r\n" + second + b"POST /c"
    for pieces in splits(data):
        assert heads_of(pieces) == ([first, second], b"POST /c")


def test_next_head_refuses_a_head_past_its_limit_in_every_split():
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 40 + b"\r\n\r\n"
    for pieces in splits(head):
        assert heads_of(pieces, limit=len(head)) == ([head], b"")
    for pieces in splits(head + b"more"):
        with pytest.raises(HttpError) as info:
            heads_of(pieces, limit=len(head) - 1)
        assert info.value.status == 431


@given(st.lists(st.binary(max_size=40), max_size=8), st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_next_head_agrees_with_one_search_of_the_whole(junk, cut):
    # Random bytes, cut anywhere: the resumed search finds exactly the heads one pass would.
    data = b"\r\n\r\n".join(junk) + b"\r\n\r\n"
    pieces = [data[i:i + cut] for i in range(0, len(data), cut)]
    expected, buf = [], data
    while True:
        buf = buf.lstrip(b"\r\n")
        end = find_head_end(buf)
        if end < 0:
            break
        expected.append(buf[:end])
        buf = buf[end:]
    assert heads_of(pieces, limit=10 ** 6) == (expected, buf)


@pytest.mark.parametrize("head, keep", [
    (b"GET / HTTP/1.1\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
])
def test_request_keep_alive(head, keep):
    assert parse_request_head(head).keep_alive is keep


def test_host_from_header_or_absolute_target_and_duplicates_refused():
    assert request_host(parse_request_head(b"GET / HTTP/1.1\r\nHost: a.localhost:80\r\n\r\n")) == "a.localhost:80"
    absolute = parse_request_head(b"GET http://b.localhost/x?y HTTP/1.1\r\nHost: other\r\n\r\n")
    assert request_host(absolute) == "b.localhost"
    assert http11.origin_form(absolute) == b"/x?y"
    assert request_host(parse_request_head(b"GET / HTTP/1.1\r\n\r\n")) is None
    with pytest.raises(HttpError):
        request_host(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"))
    for target in (b"http://user@a.localhost/", b"http:///x"):
        with pytest.raises(HttpError) as info:
            request_host(parse_request_head(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target))
        assert info.value.status == 400


def test_absolute_form_goes_on_in_origin_form_with_the_host_it_named():
    # Routed by the authority, so the origin must see that Host, not the one the sender added.
    req = parse_request_head(b"GET http://victim.localhost:8080/reset?u=1 HTTP/1.1\r\n"
                             b"Host: evil.example\r\nAccept: */*\r\n\r\n")
    assert forward_request_head(req) == (b"GET /reset?u=1 HTTP/1.1\r\nHost: victim.localhost:8080\r\n"
                                         b"Accept: */*\r\n\r\n")
    bare = parse_request_head(b"GET http://victim.localhost HTTP/1.1\r\n\r\n")
    assert forward_request_head(bare) == b"GET / HTTP/1.1\r\nHost: victim.localhost\r\n\r\n"


def test_header_line_count_is_bounded_for_responses_too():
    many = b"HTTP/1.1 200 OK\r\n" + b"a:\r\n" * (http11.MAX_RESPONSE_FIELDS + 1) + b"\r\n"
    with pytest.raises(HttpError) as info:
        parse_response_head(many)
    assert info.value.status == 502
    assert len(parse_request_head(b"GET / HTTP/1.1\r\n" + b"a:\r\n" * 100 + b"\r\n").lines) == 100


def test_forward_head_drops_hop_by_hop_but_keeps_upgrades():
    req = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nKeep-Alive: 5\r\n"
                             b"X-Forwarded-For: 6.6.6.6\r\n\r\n")
    out = forward_request_head(req, [b"X-Forwarded-For: 1.2.3.4"], drop=frozenset([b"x-forwarded-for"]))
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    up = parse_request_head(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert b"Connection: Upgrade\r\n" in forward_request_head(up)


# --- framing ----------------------------------------------------------------------------------

def req(head):
    return parse_request_head(head)


def resp(head):
    return parse_response_head(head)


@pytest.mark.parametrize("head, kind, length", [
    (b"GET / HTTP/1.1\r\n\r\n", Fixed, 0),
    (b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", Fixed, 12),
    (b"POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n", Fixed, 7),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Chunked, None),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", Chunked, None),
])
def test_request_framing(head, kind, length):
    framer = request_framer(req(head))
    assert isinstance(framer, kind)
    if length is not None:
        assert framer.remaining == length


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",  # smuggling
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",                  # RFC 9112 6.1
])
def test_ambiguous_request_framing_is_refused(head):
    with pytest.raises(HttpError) as info:
        request_framer(req(head))
    assert info.value.status == 400


@pytest.mark.parametrize("method, head, kind", [
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", Fixed),
    (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", Fixed),
    (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", Fixed),
    (b"GET", b"HTTP/1.1 100 Continue\r\n\r\n", Fixed),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Chunked),
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Fixed),
    (b"GET", b"HTTP/1.1 200 OK\r\n\r\n", UntilClose),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", UntilClose),
    (b"GET", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", UntilClose),
])
def test_response_framing(method, head, kind):
    assert isinstance(response_framer(method, resp(head)), kind)


def test_empty_bodies_for_head_1xx_204_304():
    for method, head in ((b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"),
                         (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")):
        assert response_framer(method, resp(head)).done


CHUNKED_CASES = [
    (b"5\r\nhello\r\n0\r\n\r\n", b""),
    (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"NEXT"),
    (b"A\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"),
    (b"0\r\n\r\n", b"x"),
    (b"3;a=b\t\r\nabc\r\n0\r\nA: b\r\n\r\n", b""),
]


@pytest.mark.parametrize("body, after", CHUNKED_CASES)
def test_chunked_body_ends_exactly_in_every_split(body, after):
    for pieces in splits(body + after):
        framer = Chunked(400)
        got, leftover = consume(framer, pieces)
        assert framer.done
        assert got == body and leftover == after


@pytest.mark.parametrize("body", [
    b"zz\r\nhello\r\n",                     # not hex
    b"5\r\nhelloX\r\n",                     # data longer than its size
    b"1" * 20 + b"\r\n",                    # absurd size
    b"5" + b";" * (framing.MAX_LINE + 10),  # endless size line
    b"3\nabc\r\n0\r\n\r\n",                # bare LF: Node refuses it, some origins read a request
    b"2;\nAB\r\n0\r\n\r\n",                 # the smuggling shape from issue 11
    b"3\r\nabc\n0\r\n\r\n",                # bare LF after the data
    b"3\r\nabc\r\n0\r\n\n",                # bare LF ending the body
    b" 3\r\nabc\r\n0\r\n\r\n",             # space before the size
    b"3;\x1b\r\nabc\r\n0\r\n\r\n",          # control byte in an extension
    b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",  # malformed trailer
])
def test_broken_chunking_raises_with_the_given_status(body):
    for pieces in splits(body):
        with pytest.raises(HttpError) as info:
            consume(Chunked(502), pieces)
        assert info.value.status == 502


def test_chunk_line_limit_holds_across_pieces():
    # Half a line in one read and half in the next must not add up to twice the limit.
    half = b"5;" + b"x" * (framing.MAX_LINE // 2 + 10)
    framer = Chunked(400)
    assert framer.feed(half) == len(half)
    with pytest.raises(HttpError):
        framer.feed(b"x" * (framing.MAX_LINE // 2 + 10) + b"\r\n")


def test_a_flood_of_tiny_chunks_is_parsed_in_slices():
    body = b"1\r\nx\r\n" * (3 * framing.LINES_PER_FEED) + b"0\r\n\r\n"
    framer = Chunked(400)
    first = framer.feed(body)
    assert 0 < first < len(body) and not framer.done     # stopped short: the caller yields here
    assert consume(framer, [body[first:]]) == (body[first:], b"")


def test_fixed_body_leaves_the_next_message():
    for pieces in splits(b"abcdefNEXT"):
        framer = Fixed(6)
        assert consume(framer, pieces) == (b"abcdef", b"NEXT")


def encode_chunked(parts, trailers=b""):
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n" + trailers + b"\r\n"


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
       after=st.binary(max_size=40), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_chunked_property_any_body_any_split(parts, after, cuts):
    body = encode_chunked(parts)
    data = body + after
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    framer = Chunked(400)
    got, leftover = consume(framer, [data[a:b] for a, b in zip(bounds, bounds[1:])])
    assert framer.done and got == body and leftover == after


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_chunked_property_garbage_never_crashes_otherwise(data):
    framer = Chunked(400)
    try:
        used = framer.feed(data)
    except HttpError as exc:
        assert exc.status == 400
    else:
        assert 0 <= used <= len(data)


_NAME = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z", fullmatch=True)
# Field values: no control bytes but HTAB (the parser refuses the rest).
_VALUE = st.binary(max_size=40).map(lambda v: bytes(b for b in v if b == 9 or 32 <= b != 127).strip(b" \t"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_NAME, _VALUE), max_size=10))
def test_request_head_property_round_trips_headers(headers):
    head = b"GET /p HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    parsed = parse_request_head(head)
    assert parsed.lines == [n + b": " + v for n, v in headers]
    for name, value in headers:
        assert value in parsed.fields[name.lower()]
    assert forward_request_head(parsed) == b"GET /p HTTP/1.1\r\n" + b"".join(
        n + b": " + v + b"\r\n" for n, v in headers
        if n.lower() not in (b"connection", b"keep-alive", b"proxy-connection")) + b"\r\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_request_head_property_random_bytes_give_400_or_a_request(data):
    try:
        parse_request_head(data)
    except HttpError as exc:
        assert exc.status in (400, 505)


def test_closing_response_head_replaces_connection_and_keeps_the_rest():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX: y\r\n\r\n"
    assert http11.closing_response_head(raw) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("head, trusted, expected", [
    # A visitor's own X-Forwarded-* could be forged: replaced.
    (b"GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
     False, [b"X-Forwarded-For: 10.0.0.9", b"X-Forwarded-Proto: http", b"X-Forwarded-Host: t.example.com"]),
    # A trusted proxy's are kept, its For list extended with the address it connected from.
    (b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: t.example.com\r\n\r\n",
     True, [b"X-Forwarded-For: 1.2.3.4, 10.0.0.9", b"X-Forwarded-Proto: https", b"X-Forwarded-Host: t.example.com"]),
    # A trusted proxy that sent none: ours, as for anyone.
    (b"GET / HTTP/1.1\r\n\r\n",
     True, [b"X-Forwarded-For: 10.0.0.9", b"X-Forwarded-Proto: http", b"X-Forwarded-Host: t.example.com"]),
    # HTTP/1.0 keeps the shared tunnel socket open; an HTTP/1.0 upgrade keeps its own Connection.
    (b"GET / HTTP/1.0\r\n\r\n", False,
     [b"X-Forwarded-For: 10.0.0.9", b"X-Forwarded-Proto: http", b"X-Forwarded-Host: t.example.com",
      b"Connection: keep-alive"]),
    (b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", False,
     [b"X-Forwarded-For: 10.0.0.9", b"X-Forwarded-Proto: http", b"X-Forwarded-Host: t.example.com"]),
])
def test_forwarded_lines(head, trusted, expected):
    assert http11.forwarded_lines(parse_request_head(head), "10.0.0.9", "t.example.com", trusted) == expected


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
    b"POST /x?y=1 HTTP/1.0\r\nHost:a\r\nX-Odd:  spaced  \r\nContent-Length: 0\r\n\r\n",
    b"GET http://a.localhost/p HTTP/1.1\r\n\r\n",
])
def test_raw_request_head_is_the_head_as_sent(head):
    assert http11.raw_request_head(parse_request_head(head)) == head
