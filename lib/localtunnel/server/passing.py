"""Handing a visitor's connection to another node of the same machine by passing the socket
itself (issue 14).

Between machines, a node that does not hold a tunnel hands its visitor over by splicing the
connection to the owner's internal port (peers.hand_over): every byte then crosses this node
twice, which costs about half the owner path's CPU again (bench/cluster.py). Nodes of one machine,
such as the workers of `gunicorn -w N`, do better: the visitor's socket itself goes to the owner
over a Unix socket (SCM_RIGHTS), with the bytes this node already read from it, and this node is
done. The owner serves the connection as if it had accepted it.

Each node listens on an abstract Unix socket named after its node id: no file to clean up, gone
with the process, and reachable only within one network namespace, where both nodes see the same
visitor connections. A node on another machine is not found there, and the splice is used.
Abstract names have no file permissions, so both ends check the other's user (SO_PEERCRED): a
process of another user could otherwise hand in sockets naming any visitor address, or take
visitors by binding a dead node's name.

One message per visitor, on a SOCK_SEQPACKET connection (message boundaries kept, sent whole or
not at all): "<address family> <visitor address>\\n", then the bytes already read; the descriptor
rides along as SCM_RIGHTS.
"""
import array
import ipaddress
import logging
import os
import socket
import struct

from gevent.lock import Semaphore
from gevent.pool import Pool

from ..transfer import relay
from .descriptors import Acceptor

log = logging.getLogger(__name__)

#: The largest message: the head and the bytes that came with it (by default at most the head limit
#: and one recv, under 100 KiB). A visitor whose bytes do not fit is spliced instead.
MAX_MESSAGE = 256 * 1024
#: Send buffer of a channel, so a burst of hand-overs does not wait for the owner to read each.
CHANNEL_BUFFER = 4 * 1024 * 1024
#: Nodes remembered (on this machine or not): node ids are random per process, so this bounds a
#: dict that would otherwise grow with every node that ever lived.
REMEMBERED = 4096

_FD_SIZE = array.array("i").itemsize
_CREDENTIALS = struct.Struct("3i")      # struct ucred: pid, uid, gid
_VISITOR_FAMILIES = frozenset((socket.AF_INET, socket.AF_INET6))


def door_name(node_id):
    """The abstract Unix socket name of node `node_id`'s door."""
    return "\0localtunnel-node-" + node_id


def _peer_uid(sock):
    return _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))[1]


class _Late(Exception):
    pass


class Door:
    """Where a node takes the visitor connections other nodes of its machine pass it:
    `take(sock, ip, buf)` serves one as the internal port would, `buf` being its bytes so far."""

    def __init__(self, node_id, take):
        self.node_id, self._take = node_id, take
        self._server = None
        self._visitors = Pool()     # so stop() ends them, as the ports' pools do

    def start(self):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(door_name(self.node_id))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._server = Acceptor(listener, self._serve_node, spawn=Pool())
        self._server.start()

    def stop(self, timeout=1):
        if self._server is not None:
            self._server.stop(timeout=timeout)
        self._visitors.kill(block=False)

    def _serve_node(self, channel, _addr):
        """Messages from one other node, one per visitor, until it closes the channel."""
        if _peer_uid(channel) != os.getuid():
            log.warning("cluster: refused a socket hand-over channel from another user's process")
            return
        buf = bytearray(MAX_MESSAGE)
        while True:
            try:
                size, ancdata, flags, _ = channel.recvmsg_into([buf], socket.CMSG_SPACE(_FD_SIZE))
            except OSError:
                return      # the other node died mid-message: its visitors went with it
            fds = _descriptors(ancdata)
            if size == 0 and not fds:
                return      # the other node closed its end
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                adopted = False
            else:
                adopted = self._adopt(fds[0], bytes(buf[:size]))
            if not adopted:
                log.warning("cluster: a malformed socket hand-over from another node; channel closed")
                return

    def _adopt(self, fd, message):
        """Serve the visitor of one message; False (its descriptor closed) when the message is
        not one: the address goes into X-Forwarded-For, so it must be an address."""
        header, _, rest = message.partition(b"\n")
        try:
            family, ip = header.split(b" ")
            family = int(family)
            if family not in _VISITOR_FAMILIES:
                raise ValueError("not a TCP visitor")
            ip = str(ipaddress.ip_address(ip.decode("ascii")))
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)
        except (ValueError, OSError):
            os.close(fd)
            return False
        self._visitors.spawn(self._serve_visitor, sock, ip, rest)
        return True

    def _serve_visitor(self, sock, ip, buf):
        try:
            self._take(sock, ip, buf)
        finally:
            sock.close()


def _descriptors(ancdata):
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % _FD_SIZE])
    return list(fds)


class Passer:
    """Passes visitor connections to the nodes of this machine, over one channel per node, and
    remembers which nodes are elsewhere (so they cost one failed connect, once)."""

    def __init__(self, deadlines, timeout):
        self._deadlines, self._timeout = deadlines, timeout
        self._channels = {}     # node id -> (channel, Semaphore), or None: not on this machine
        self._failing = set()   # nodes whose last pass failed: logged once, not per visitor

    def pass_over(self, node_id, sock, ip, data):
        """Whether node `node_id` now has visitor connection `sock` (introduced as `ip`, with
        `data` its bytes so far): if so this node only closes its own descriptor of it. False
        when the node is not on this machine, the connection is TLS (its state lives in this
        process), or the node did not take it: the caller splices instead."""
        if type(sock) is not relay._PLAIN_SOCKET:
            return False
        message = b"%d %s\n" % (sock.family, ip.encode("ascii")) + data
        if len(message) > MAX_MESSAGE:
            return False
        found = self._channel(node_id)
        if found is None:
            return False
        channel, lock = found
        try:
            # The bound covers the wait for the lock too: every visitor queued behind one that
            # waits for room in the channel is bounded by itself.
            with self._deadlines.bound(self._timeout, _Late), lock:
                _send_message(channel, message, sock.fileno())
        except (OSError, _Late) as exc:
            if node_id not in self._failing:
                self._failing.add(node_id)
                log.warning("cluster: passing visitors to node %s fails (%s); splicing them instead",
                            node_id, exc.strerror if isinstance(exc, OSError) else "it does not read them")
            self._forget(node_id, found)
            return False
        self._failing.discard(node_id)
        return True

    def _channel(self, node_id):
        if node_id in self._channels:
            return self._channels[node_id]
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._deadlines.bound(self._timeout, _Late):
                channel.connect(door_name(node_id))
            if _peer_uid(channel) != os.getuid():
                log.warning("cluster: node %s's socket door belongs to another user; not passing sockets there",
                            node_id)
                raise _Late()
            channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
            found = (channel, Semaphore())
        except (OSError, _Late):
            channel.close()     # no such door here: a node of another machine (or network namespace)
            found = None
        if node_id in self._channels:   # another greenlet got there first while we connected
            if found is not None:
                found[0].close()
            return self._channels[node_id]
        if len(self._channels) >= REMEMBERED:
            self.close()
            self._failing.clear()
        self._channels[node_id] = found
        return found

    def _forget(self, node_id, found):
        if self._channels.get(node_id) is found:
            del self._channels[node_id]     # the next visitor tries once more: a dead node is not found
        found[0].close()

    def close(self):
        for found in self._channels.values():
            if found is not None:
                found[0].close()
        self._channels.clear()


def _send_message(channel, message, fd):
    """One whole message with the descriptor, waiting for room as gevent's own sends do (the
    caller bounds the wait). SOCK_SEQPACKET sends it whole or not at all."""
    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    while True:
        try:
            channel._sock.sendmsg([message], ancdata)
            return
        except BlockingIOError:
            channel._wait(channel._write_event)
