"""The PROXY protocol's text header (version 1, as HAProxy specifies it): one line in front of a
connection's bytes saying whose connection it is. One cluster node hands a visitor's whole
connection to another with it (issue 14). Pure: bytes in, bytes out.
"""
import ipaddress

PREFIX = b"PROXY "
#: The longest line the specification allows, CRLF included ("PROXY TCP6" and two full addresses).
MAX_LINE = 107


class BadProxyLine(ValueError):
    """What a connection began with is no PROXY line we accept."""


def proxy_line(source, destination):
    """The line introducing a connection from `source` to `destination`, each (address, port)."""
    family = b"TCP6" if ":" in source[0] else b"TCP4"
    if (":" in destination[0]) != (family == b"TCP6"):
        # The spec wants both addresses in one family; the destination is informational only.
        destination = ("::" if family == b"TCP6" else "0.0.0.0", 0)
    return b"PROXY %s %s %s %d %d\r\n" % (family, source[0].encode(), destination[0].encode(),
                                         source[1], destination[1])


def may_be_proxy_line(buf):
    """Whether the bytes a connection began with are, so far, the start of a PROXY line."""
    return PREFIX.startswith(buf[:len(PREFIX)])


def split_proxy_line(buf):
    """(the source address the line names, the bytes after it) when `buf` holds a whole line;
    None while it may still be arriving. Raises BadProxyLine: not a PROXY line, too long, or
    malformed. `UNKNOWN` (a connection the sender cannot describe) gives a source of None."""
    if not may_be_proxy_line(buf):
        raise BadProxyLine("the connection does not begin with a PROXY line")
    end = buf.find(b"\r\n", 0, MAX_LINE)
    if end < 0:
        if len(buf) >= MAX_LINE:
            raise BadProxyLine("the PROXY line is longer than %d bytes" % MAX_LINE)
        return None
    return _source(buf[len(PREFIX):end].split(b" ")), buf[end + 2:]


def _source(fields):
    if fields[0] == b"UNKNOWN":
        return None
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise BadProxyLine("malformed PROXY line")
    try:
        source, destination = (ipaddress.ip_address(field.decode("ascii")) for field in fields[1:3])
        ports = [int(field) for field in fields[3:5]]
    except (ValueError, UnicodeDecodeError):
        raise BadProxyLine("malformed address or port in the PROXY line") from None
    if source.version != destination.version or source.version != (6 if fields[0] == b"TCP6" else 4):
        raise BadProxyLine("the PROXY line's addresses are not of its family")
    if any(not 0 <= port <= 65535 or not field.isdigit() for port, field in zip(ports, fields[3:5])):
        raise BadProxyLine("malformed port in the PROXY line")
    return str(source)
