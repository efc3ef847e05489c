"""What happens on a visitor connection before its first request: the TLS handshake when the
public port speaks TLS, and the PROXY line with which a balancer or another node names whose
connection it is. Both are bounded by --head-timeout, like a head.
"""
import logging
import ssl

from ..transfer import relay
from ..wire import protocol
from ..wire.http11 import HttpError
from ..wire.proxy_line import BadProxyLine, may_be_proxy_line, split_proxy_line

log = logging.getLogger(__name__)


class _Late(Exception):
    pass


def handshake(certificates, sock, addr, deadlines, timeout):
    """The visitor's TLS socket once its handshake is done within `timeout`, else None (a
    silent or broken client holds nothing longer than a slow head would)."""
    try:
        tls = certificates.wrap(sock)
        with deadlines.bound(timeout, _Late):
            tls.do_handshake()
        return tls
    except (_Late, ssl.SSLError, OSError) as exc:
        log.debug("front: TLS handshake with %s failed: %s", addr[0], exc)
        sock.close()
        return None


def introduced(conn, ip, deadlines, timeout, is_node=None):
    """Who is on connection `conn` (a relay.Reader) from `ip`: the visitor named by the PROXY
    line it begins with, or without one `ip` itself. Called only where the sender may say so:
    with `is_node`, the internal port, where only a live node may (anyone else's PROXY line is a
    403: it could name any address and so pass a tunnel's limits); without, the public port, for
    a --trusted-proxies address such as an L4 balancer with `send-proxy`. Bytes after the line
    stay in conn.buf."""
    try:
        with deadlines.bound(timeout, _Late):
            split = None
            while split is None:
                data = conn.sock.recv(relay.BUFSIZE)
                if not data:
                    raise relay.Closed()
                conn.buf += data
                if not may_be_proxy_line(conn.buf):
                    return ip
                split = split_proxy_line(conn.buf)
    except _Late:
        raise relay.Closed() from None     # silence before a first request: closed quietly, as ever
    except BadProxyLine as exc:
        raise HttpError(400, str(exc)) from None
    if is_node is not None and not is_node(ip):
        raise HttpError(403, "only another node of this cluster may hand a connection over", "not-a-node")
    source, conn.buf = split
    return protocol.normal_address(source) if source else ip
