"""How the inspector shows an exchange: pure functions from captured bytes to JSON-ready dicts,
run only when the page or the API asks (capturing parses and decodes nothing).

Bodies are shown as they were meant: chunked framing removed, gzip and deflate undone (within a
bound, so a small bomb cannot fill memory), JSON pretty-printed, forms as pairs, text as text,
images as images, and anything else as a hex view.
"""
import base64
import json
import urllib.parse
import zlib

from ..wire.http11 import HttpError, parse_request_head, parse_response_head

#: Bytes a decoded (gunzipped) body may grow to for display; past it the view is cut and says so.
DECODED_LIMIT = 4 << 20
#: Bytes of a binary body shown in the hex view.
HEX_LIMIT = 4096
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "+json", "+xml")


def summary(exchange, now):
    """One line of the list."""
    end = exchange.finished if exchange.finished is not None else now
    return {
        "id": exchange.id,
        "time": exchange.wall,
        "method": _text(exchange.method),
        "path": _text(exchange.target),
        "status": exchange.status,
        "duration_ms": round((end - exchange.started) * 1000, 1),
        "pending": exchange.finished is None,
        "size": max(exchange.response_size - _head_length(exchange.response), 0),
        "replay_of": exchange.replay_of,
        "websocket": exchange.upgraded,
    }


def detail(exchange, now):
    """Everything about one exchange: both heads, both bodies, and the times."""
    out = summary(exchange, now)
    waited = exchange.first_byte - exchange.started if exchange.first_byte is not None else None
    out["waited_ms"] = None if waited is None else round(waited * 1000, 1)
    out["evicted"] = exchange.evicted
    out["request"] = _message(exchange.request, exchange.request_size, parse_request_head)
    out["response"] = _message(exchange.response, exchange.response_size, parse_response_head)
    return out


def _message(chunks, size, parse):
    data = b"".join(chunks)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return {"head": _text(data), "headers": [], "body": None}
    head, body = data[:end + 4], data[end + 4:]
    try:
        fields = parse(head).fields
    except HttpError:
        fields = {}
    headers = [[_text(part.strip()) for part in line.split(b":", 1)] for line in head.split(b"\r\n")[1:-2]
               if b":" in line]
    return {"head": _text(head), "headers": headers, "body": body_view(fields, body, size - len(head))}


def body_view(fields, body, size):
    """The body `body` (what was kept of `size` bytes sent) as the API and the page show it."""
    truncated = len(body) < size
    framing = _value(fields, b"transfer-encoding")
    payload = dechunk(body) if framing and b"chunked" in framing.lower() else body
    out = {"size": size, "kept": len(body), "truncated": truncated}
    out.update(raw_text_or_base64(payload))
    coding = (_value(fields, b"content-encoding") or b"").strip().lower()
    if coding in (b"gzip", b"x-gzip", b"deflate"):
        decoded, complete = decompress(payload, coding)
        out["content_encoding"] = coding.decode()
        out["decoded_complete"] = complete
        payload = decoded
    out.update(_show(payload, (_value(fields, b"content-type") or b"").decode("latin-1")))
    return out


def raw_text_or_base64(data):
    """The body as sent (framing removed): text when it decodes as UTF-8, else base64."""
    try:
        return {"data": data.decode("utf-8"), "base64": False}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode("ascii"), "base64": True}


def dechunk(data):
    """The payload of a chunked body, as far as it was kept."""
    out, pos = [], 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            break
        try:
            length = int(data[pos:line_end].split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            break
        if length == 0:
            break
        out.append(data[line_end + 2:line_end + 2 + length])
        pos = line_end + 2 + length + 2
    return b"".join(out)


def decompress(data, coding):
    """(Decoded bytes, whether the whole stream decoded) within DECODED_LIMIT."""
    if coding == b"deflate" and data[:1] != b"\x78":
        decoder = zlib.decompressobj(-zlib.MAX_WBITS)     # raw deflate, as some servers send
    else:
        decoder = zlib.decompressobj(zlib.MAX_WBITS | (16 if coding != b"deflate" else 0))
    try:
        decoded = decoder.decompress(data, DECODED_LIMIT)
    except zlib.error:
        return b"", False
    return decoded, decoder.eof and len(decoded) < DECODED_LIMIT


def _show(payload, content_type):
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime.startswith("image/"):
        return {"kind": "image", "mime": mime, "image": base64.b64encode(payload).decode("ascii")}
    text = _decoded_text(payload, mime)
    if text is None:
        return {"kind": "binary", "hex": hex_view(payload[:HEX_LIMIT]), "hex_cut": len(payload) > HEX_LIMIT}
    if mime == "application/json" or mime.endswith("+json"):
        try:
            return {"kind": "json", "text": json.dumps(json.loads(text), indent=2, ensure_ascii=False)}
        except ValueError:
            pass    # cut or broken: shown as text
    if mime == "application/x-www-form-urlencoded":
        return {"kind": "form", "form": urllib.parse.parse_qsl(text, keep_blank_values=True), "text": text}
    return {"kind": "text", "text": text}


def _decoded_text(payload, mime):
    if not payload:
        return ""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        if not any(mime.startswith(kind) or mime.endswith(kind) for kind in TEXT_TYPES):
            return None
        text = payload.decode("latin-1")
    if "\x00" in text:
        return None
    return text


def hex_view(data):
    """Lines of 16 bytes: offset, hex, and the printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        row = data[offset:offset + 16]
        printable = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in row)
        lines.append("%08x  %-47s  %s" % (offset, " ".join("%02x" % byte for byte in row), printable))
    return "\n".join(lines)


def _head_length(chunks):
    data = chunks[0] if chunks else b""
    end = data.find(b"\r\n\r\n")
    if end < 0 and len(chunks) > 1:
        data = b"".join(chunks)
        end = data.find(b"\r\n\r\n")
    return end + 4 if end >= 0 else 0


def _value(fields, name):
    values = fields.get(name)
    return values[-1] if values else None


def _text(data):
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
