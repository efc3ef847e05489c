"""Moving bytes between sockets: heads, framed bodies and raw splices. Shared by server and client.

The counterpart of bore's `proxy()` and of the `pipe()` calls in the Node client's
TunnelCluster.js, but message-aware: a body is copied exactly to its end so the socket can carry
the next message. Bytes read past a message stay in the Reader's buffer for the next one.
"""
import errno
import fcntl
import ipaddress
import logging
import os
import select
import socket
import time

import gevent
import gevent.socket
from gevent.event import Event
from gevent.hub import Waiter
from gevent.monkey import get_original

from ..wire.framing import Fixed
from ..wire.http11 import next_head

log = logging.getLogger(__name__)

#: Seconds a splice waits, once one direction has ended, for silence from the other to end too.
LINGER = 5.0
#: One recv's worth. 64 KiB keeps syscalls few on bulk transfers without bloating idle memory
#: (buffers only live while data is moving).
BUFSIZE = 65536
#: Bodies this small travel in the same send as their head: one syscall, one TCP segment.
COALESCE = 16384
#: Bytes a copy loop moves before it lets every other greenlet run. gevent's recv and send return
#: at once while data and buffer room are there, so a loop that only moves bytes never blocks:
#: without this one fast sender held the whole process for as long as it kept sending.
YIELD_EVERY = 262144
#: The longest a loop that yields waits for the event loop to go idle before it moves on anyway,
#: so a bulk transfer still progresses while other traffic keeps the loop busy.
YIELD_WAIT = 0.005

#: A body of known length at least this long goes socket to socket with splice(2) through a pipe:
#: the kernel moves its pages and Python only waits for readiness. One hop in front of nginx
#: moved 64 MiB downloads 1.3-1.5 times as fast as with recv + send (bench/zero_copy.py).
SPLICE_AT_LEAST = 1 << 20
#: What a pipe holds while splicing, and so the most one splice moves (the default is 64 KiB).
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if hasattr(os, "splice") else 0

#: The disconnects that are a peer's right, not our error: never logged as failures.
EXPECTED_DISCONNECTS = frozenset((
    errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ETIMEDOUT,
    errno.EBADF, errno.ESHUTDOWN,
))


def is_expected_disconnect(exc):
    return isinstance(exc, OSError) and exc.errno in EXPECTED_DISCONNECTS


_PLAIN_SOCKET = gevent.socket.socket
_UNPATCHED_POLL = get_original("select", "poll")


def send_all(sock, data, bound=None):
    """sock.sendall(data), one syscall cheaper in the common case. `bound()`, when given, is
    entered around the wait for buffer room: a peer that stops reading must not hold us.

    gevent's sendall asks the kernel for SO_SNDBUF before every send (6% of the server's time in
    a profile of 1 KiB requests). On a plain socket we first try one raw non-blocking send; only
    what does not fit in the socket buffer takes gevent's cooperative, waiting path. TLS sockets
    always go through their own sendall: a raw send would bypass the encryption. A Tee hands
    the bytes to its watcher first, then sends them the same way."""
    if type(sock) is Tee:
        sock.take(data)
        sock = sock.sock
    if type(sock) is _PLAIN_SOCKET:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    if bound is None:
        sock.sendall(data)
    else:
        with bound():
            sock.sendall(data)


class Tee:
    """A socket whose sent bytes are also handed to `take` (the client's request inspector wraps
    the connections of one exchange in these). Everything else is the socket's own. While
    `full()` is false the kernel does not splice bodies past `take`; once it is true (the
    watcher keeps no more), copy_body splices again and reports the bytes to `skipped(n)`."""

    __slots__ = ("sock", "take", "full", "skipped")

    def __init__(self, sock, take, full=None, skipped=None):
        self.sock, self.take, self.full, self.skipped = sock, take, full, skipped

    def sendall(self, data):
        send_all(self, data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def connect(address, timeout):
    """A TCP connection for request after request: the connect bounded by `timeout`, every wait
    after it bounded by its caller, Nagle off (a small head goes out at once, not after an ACK)."""
    family = _numeric_family(address[0])
    if family is None:
        sock = socket.create_connection(address, timeout=timeout)
    else:
        # An address already: gevent's getaddrinfo would still hand it to a resolver thread and
        # back (a third of the CPU a short-lived hop between cluster nodes cost).
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def listen(address, backlog=1024, reuse_port=False):
    """A listening TCP socket on `address`, with SO_REUSEADDR (a restart need not wait out
    TIME_WAIT); with `reuse_port`, one that several processes may share (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_first_free(host, port, tries, backlog=1024):
    """listen() on the first of `tries` ports from `port` that is not in use. Raises the last
    EADDRINUSE when all are, and any other error at once."""
    error = None
    for candidate in range(port, min(port + tries, 65536)):
        try:
            return listen((host, candidate), backlog)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            error = exc
    raise error


def _numeric_family(host):
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def acknowledge_now(sock):
    """Send the ACK for what was read, now, instead of after the kernel's delayed-ACK timer.
    TCP_QUICKACK leaves the delayed mode and pushes an ACK that is pending (Linux)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass    # gone, or not TCP: nothing to acknowledge


class InputProbe:
    """Says, without waiting, whether a socket holds input nobody read yet: bytes, an EOF or an
    error. Checked before every reuse of a shared connection, so it must be cheap: poll(2) with a
    zero timeout on a set made once per socket costs 0.3 us here, a MSG_PEEK recv that raises
    when there is nothing 1.5 us. The poll is the unpatched one: gevent's would wait cooperatively.
    For a TLS socket it sees the raw bytes, records included, which errs on the safe side."""

    __slots__ = ("_poll",)

    def __init__(self, sock):
        self._poll = _UNPATCHED_POLL()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def has_input(self):
        return bool(self._poll.poll(0))


def yield_to_others():
    """Let every greenlet with I/O ready run, then come back.

    gevent.sleep(0) is not enough: it only queues a callback, and a greenlet that keeps sleeping
    0 runs again before the loop polls for I/O (for up to 50 callbacks, then the switch
    interval). An idle watcher fires only once the loop has polled and found nothing pending; the
    timer bounds the wait when other traffic never lets the loop go idle."""
    hub = gevent.get_hub()
    waiter = Waiter(hub)
    idle, timer = hub.loop.idle(), hub.loop.timer(YIELD_WAIT)
    idle.start(waiter.switch, None)
    timer.start(waiter.switch, None)
    try:
        waiter.get()
    finally:
        idle.close()
        timer.close()


class Closed(Exception):
    """The peer closed the connection before a message was complete."""


class Reader:
    """A socket plus read-ahead: what is read past one message belongs to the next."""

    __slots__ = ("sock", "buf", "drained")

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = buf
        # Whether the last recv emptied the kernel's buffer: it returned less than it asked for,
        # so at that moment nothing more was waiting. Checking the socket again right after costs
        # a syscall (15-25% of keep-alive throughput) and closes no gap the recv left open.
        self.drained = False

    def recv(self):
        if self.buf:
            data, self.buf = self.buf, b""
            return data
        data = self.sock.recv(BUFSIZE)
        self.drained = len(data) < BUFSIZE
        return data

    def unread(self, data):
        self.buf = data + self.buf

    def read_head(self, limit):
        """The next head, blank line included; None on a clean EOF before its first byte.

        Raises HttpError(431) past `limit` bytes and Closed on an EOF inside a head. The
        caller bounds the time (a deadline): a slow sender must not hold anyone else."""
        buf, self.buf = self.buf, b""
        scanned = 0
        while True:
            head, buf = next_head(buf, limit, scanned)
            if head is not None:
                self.buf = buf
                return head
            scanned = len(buf)
            data = self.sock.recv(BUFSIZE)
            self.drained = len(data) < BUFSIZE
            if not data:
                if buf:
                    raise Closed("connection closed in the middle of a head")
                return None
            buf += data


def copy_body(src, framer, dst, prefix=b"", bound=None):
    """Send `prefix`, then the body `framer` delimits, from Reader `src` to socket `dst`.

    Returns (complete, bytes sent, prefix included): complete when the body ended (for a
    close-delimited body: at EOF), not when `src` closed first. Bytes past the body are left in
    `src` for the next message. `bound()`, when given, is entered around every read and every
    send that may wait: a peer that goes silent mid-body, or stops reading, must not hold the
    other side (and a shared tunnel socket) for ever."""
    out, sent, moved = prefix, len(prefix), 0
    while not framer.done:
        target = None if src.buf else _splice_target(dst)
        if target is not None and _can_splice(framer, src.sock, target):
            if out:
                send_all(dst, out, bound)
                out = b""
            spliced = _splice_body(src, framer, target, bound)
            if target is not dst:
                dst.skipped(spliced)
            sent += spliced
            if not framer.done:     # src closed before the body's end
                return False, sent
            break
        if bound is None or src.buf:
            data = src.recv()
        else:
            with bound():
                data = src.recv()
        if not data:
            if out:
                send_all(dst, out, bound)
            return framer.until_close, sent
        used = framer.feed(data)
        if used < len(data):
            src.unread(data[used:])
            data = data[:used]
            if not framer.done:
                moved = YIELD_EVERY     # the framer stopped for breath: a flood of tiny chunks
        sent += len(data)
        moved += len(data)
        if out and len(data) <= COALESCE:
            data, out = out + data, b""
        elif out:
            send_all(dst, out, bound)
            out = b""
        send_all(dst, data, bound)
        if moved >= YIELD_EVERY:
            yield_to_others()
            moved = 0
    if out:
        send_all(dst, out, bound)
    return True, sent


def _splice_target(dst):
    """The socket a body may be spliced into: `dst`, or under a Tee that wants no more bytes."""
    if type(dst) is Tee:
        return dst.sock if dst.full is not None and dst.full() else None
    return dst


def _can_splice(framer, src, dst):
    """Only plain sockets (a TLS socket's bytes are records, not the body), only a body whose
    length is known (splice stops exactly at its end, leaving the next message unread)."""
    return (type(framer) is Fixed and framer.remaining >= SPLICE_AT_LEAST and _SPLICE_FLAGS
            and type(src) is _PLAIN_SOCKET and type(dst) is _PLAIN_SOCKET)


def _splice_body(src, framer, dst, bound):
    """Move the rest of a fixed-length body from Reader `src`'s socket to socket `dst` through a
    pipe, never a byte past it. Returns the bytes moved: fewer than the body when `src` closed."""
    read_end, write_end = os.pipe()
    moved, since_yield = 0, 0
    try:
        try:
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass    # above /proc/sys/fs/pipe-max-size for an unprivileged user: 64 KiB a splice
        while framer.remaining:
            count = _splice_in(src.sock, write_end, min(framer.remaining, PIPE_SIZE), bound)
            if not count:
                break   # EOF
            framer.remaining -= count
            moved += count
            since_yield += count
            while count:
                count -= _splice_out(read_end, dst, count, bound)
            if since_yield >= YIELD_EVERY:
                yield_to_others()
                since_yield = 0
    finally:
        os.close(read_end)
        os.close(write_end)
        # What follows the body may already wait in the kernel: the next recv or a reuse check
        # must look, not assume (see Reader.drained).
        src.drained = False
    return moved


def _splice_in(sock, pipe, count, bound):
    """One splice(2) of up to `count` bytes from `sock` into `pipe`; 0 at EOF."""
    while True:
        try:
            return os.splice(sock.fileno(), pipe, count, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            _wait(sock, sock._read_event, bound)


def _splice_out(pipe, sock, count, bound):
    """One splice(2) of up to `count` bytes from `pipe` into `sock`."""
    while True:
        try:
            return os.splice(pipe, sock.fileno(), count, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            _wait(sock, sock._write_event, bound)


def _wait(sock, event, bound):
    """Wait cooperatively for `sock` to be ready (`event` is its read or write watcher), inside
    `bound()` when given: the same wait gevent's own recv and send do."""
    if bound is None:
        sock._wait(event)
    else:
        with bound():
            sock._wait(event)


class _Activity:
    """When a splice last moved a byte, in either direction, or one direction ended."""
    __slots__ = ("last",)

    def __init__(self):
        self.last = time.monotonic()


def _copy_one_way(src, dst, activity):
    """One direction of a splice. EOF half-closes the other side instead of tearing it down,
    so a peer that finished sending can still receive (sshuttle, mitmproxy do the same)."""
    moved = 0
    try:
        while True:
            if src.drained and not src.buf and type(src.sock) is _PLAIN_SOCKET:
                # The last recv emptied the socket: wait for more before asking, or nearly every
                # message costs a recv that fails (EAGAIN) first, and a splice between request/
                # response peers exchanges one message per wake-up. Not for TLS: decrypted bytes
                # may wait inside the TLS object while its socket has nothing.
                src.sock._wait(src.sock._read_event)
            data = src.recv()
            if not data:
                break
            activity.last = time.monotonic()
            send_all(dst, data)
            moved += len(data)
            if moved >= YIELD_EVERY:
                yield_to_others()
                moved = 0
    except OSError as exc:
        if not is_expected_disconnect(exc):
            log.warning("splice: %s", exc)
    finally:
        activity.last = time.monotonic()
        shutdown_quietly(dst, socket.SHUT_WR)


def shutdown_quietly(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already gone: the other direction will see it


def splice(a, b, idle=None, linger=LINGER):
    """Copy bytes both ways between Readers `a` and `b` until both directions end.

    Used for Upgrade (WebSocket) connections, which have no message boundaries we know of, and
    for a visitor connection one cluster node hands over to another. Silence ends a splice:
    `idle` seconds without a byte either way (None: never), or, once one direction has ended,
    `linger` seconds without a byte from the other. A WebSocket that only pushes one way is
    busy, not idle; but a peer that never closes its half (Node's upgraded sockets allow
    half-open ones) must not hold the connection, and a tunnel socket, for ever."""
    activity = _Activity()
    if type(a.sock) is _PLAIN_SOCKET and type(b.sock) is _PLAIN_SOCKET:
        directions = [_Pump(a, b.sock, activity), _Pump(b, a.sock, activity)]
    else:
        directions = [_Copier(a, b.sock, activity), _Copier(b, a.sock, activity)]
    try:
        while True:
            # A direction's waitable (its greenlet, or the event a _Pump sets) is ready once it ended.
            running = [direction.waitable for direction in directions if not direction.waitable.ready()]
            if not running:
                return
            quiet = idle if len(running) == 2 else min(linger, idle or linger)
            if quiet is None:
                gevent.wait(running, count=1)
            elif time.monotonic() - activity.last >= quiet:
                return      # the finally below closes both directions
            else:
                gevent.wait(running, timeout=activity.last + quiet - time.monotonic(), count=1)
    finally:
        for direction in directions:
            direction.stop()


class _Copier:
    """One direction of a splice in a greenlet of its own (_copy_one_way): for TLS sockets, whose
    bytes pass through the TLS object, and for a Tee."""

    def __init__(self, src, dst, activity):
        self.waitable = gevent.spawn(_copy_one_way, src, dst, activity)     # for gevent.wait

    def stop(self):
        self.waitable.kill()


class _Pump:
    """One direction of a splice between two plain sockets, moved in the event loop's own
    callbacks: readable -> one recv -> send, with no greenlet to switch to and from. A process
    splicing ping-pong exchanges spends 5.5-6.2 us of user time per exchange in _copy_one_way's
    greenlets and 1.7-2.0 us in these (bench/splice_callbacks.py); a cluster node splicing a
    handed-over visitor went from 27 to 21 us per request. Each callback moves at most one recv's worth, so other greenlets run between them. What
    does not fit in a send waits for room with the reading paused: the sender's own buffer is
    the only one. Same ends as _copy_one_way: EOF half-closes the other side; an error ends
    the direction (and is logged unless it is a peer's right)."""

    __slots__ = ("_src", "_dst", "_activity", "_reading", "_writing", "_pending", "waitable")

    def __init__(self, src, dst, activity):
        self._src, self._dst, self._activity = src.sock._sock, dst._sock, activity
        loop = gevent.get_hub().loop
        self._reading = loop.io(self._src.fileno(), 1)
        self._writing = loop.io(self._dst.fileno(), 2)
        self.waitable = Event()     # set when this direction has ended, for gevent.wait
        self._pending = None
        first, src.buf = src.buf, b""
        if first:
            self._forward(first)        # the read-ahead goes before anything new
        if self._pending is None and not self.waitable.is_set():
            self._reading.start(self._on_readable)

    def stop(self):
        self._reading.close()
        self._writing.close()
        self.waitable.set()

    def _on_readable(self):
        try:
            data = self._src.recv(BUFSIZE)
        except BlockingIOError:
            return
        except Exception as exc:    # nothing may escape into the event loop: it ends the direction
            self._end(exc)
            return
        if not data:
            self._end()
            return
        self._forward(data)

    def _forward(self, data):
        self._activity.last = time.monotonic()
        try:
            sent = self._dst.send(data)
        except BlockingIOError:
            sent = 0
        except Exception as exc:
            self._end(exc)
            return
        if sent < len(data):
            self._pending = memoryview(data)[sent:]
            self._reading.stop()
            self._writing.start(self._on_writable)

    def _on_writable(self):
        try:
            sent = self._dst.send(self._pending)
        except BlockingIOError:
            return
        except Exception as exc:
            self._end(exc)
            return
        self._activity.last = time.monotonic()
        self._pending = self._pending[sent:]
        if not self._pending:
            self._pending = None
            self._writing.stop()
            self._reading.start(self._on_readable)

    def _end(self, exc=None):
        if exc is not None and not is_expected_disconnect(exc):
            log.warning("splice: %s", exc)
        self._activity.last = time.monotonic()
        shutdown_quietly(self._dst, socket.SHUT_WR)
        self.stop()
