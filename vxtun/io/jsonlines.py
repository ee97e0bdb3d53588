"""One JSON object per line over a Unix stream socket: the one framing every side of vxtun's
control sockets speaks (the node's control server, the port owner and its leases in
vxtun/dataplane/owner.py, the CLI's vxtun/io/control.py and vxtun/api.py).

A ``Channel`` is used in one of two ways:

* **In a loop that must never block** (the node, the port owner).  ``receive()``, called when
  the socket is readable, returns the complete lines read so far; ``send()`` writes what the
  socket takes now and keeps the rest in a bounded buffer that ``flush()`` sends when the
  socket becomes writable (``on_backlog`` tells the loop when to watch for that).  When the
  buffer is full, a *droppable* message (an event for a monitor) is dropped and counted, and
  a ``{"ok": true, "lost": N}`` notice goes out once there is room again: a listener that
  falls behind loses events, the loop loses nothing.  An answer that does not fit closes the
  connection: a peer that does not read its answers is not waited for.  A long answer (a
  listing of a million FDB entries) is ``stream()``-ed instead: its next line is made only
  when the socket has taken everything before it, and at most one per ``flush()``, so the
  client's reading sets the pace, the loop serves packets between two lines, and the memory
  held is one line's, whatever the size of the table.
* **Blocking, as a client** (the CLI, the API, ``vxtun up``'s lease): ``write()`` a request,
  ``read()`` one line with a timeout, or ``request()`` for both.

Input is bounded too: a line longer than ``max_line`` bytes, or one that is not a JSON object,
is a ``BadLine`` in the loop (answered as a bad request; the connection lives on) and a
ControlError for a client.  Neither raises into the loop.  Buffering is linear: what arrives
is appended to one bytearray and only the new bytes are searched for the end of the line, so a
line of N bytes costs O(N) whatever the size of the pieces it comes in; the rest of a line
already refused as too long is skipped without being kept.

Who is on the other end matters as much as what it sends.  The sockets are abstract names
(``@vxtun-owner``, ``@vxtun/<dev>``), which any user of the network namespace can bind first;
so ``connect()`` asks the kernel who holds the socket (SO_PEERCRED, the credentials the server
had when it called listen()) and refuses to talk to anyone but root, before a byte is sent.
The servers check the same of their clients (vxtun/io/control.py ``accept_root``).
"""
from __future__ import annotations

import errno
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import ControlError

# Bytes queued for one connection beyond what its socket buffer holds (events for a monitor,
# answers for a client).  One answer larger than this is still queued when nothing else waits.
OUT_MAX = 256 * 1024
# The longest request a server reads: a `vxtun up --config` attach with its FDB fits easily.
MAX_LINE = 1 << 20
# The longest answer a client reads: `fdb show` of a table without maxaddress can be large.
ANSWER_MAX = 64 << 20
RECV_SIZE = 65536

DEFAULT = object()           # read(): the channel's own timeout


def encode(msg) -> bytes:
    """``msg`` as one line."""
    return json.dumps(msg).encode() + b"\n"


@dataclass(frozen=True)
class BadLine:
    """A line the peer sent that is not a JSON object, or is too long to read."""
    reason: str


class Channel:
    def __init__(self, sock: socket.socket, *, out_max: int = OUT_MAX,
                 max_line: int = MAX_LINE, timeout: float | None = None) -> None:
        self.sock = sock
        self.out_max = out_max
        self.max_line = max_line
        self.timeout = timeout           # for the blocking client calls
        self.closed = False
        self.lost = 0                    # droppable messages dropped since the last notice
        self.on_backlog: Callable[[bool], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self._in = bytearray()           # the start of a line whose end has not come yet
        self._skipping = False           # inside a line that was too long: drop to its end
        self._out = bytearray()
        self._waiting = False            # on_backlog(True) was said last
        self._closing = False            # close once the backlog is out
        self._ready: list = []           # lines read but not yet returned by read()
        self._stream: Iterator[bytes] | None = None     # the rest of a long answer
        self._stream_done: Callable[[], None] | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def backlog(self) -> int:
        """Bytes queued that the socket has not taken yet."""
        return len(self._out)

    # --- framing --------------------------------------------------------------------------

    def _lines(self, data: bytes) -> list:
        """Split what arrived into messages (dicts) and BadLines; keep a partial line.

        Linear in what arrives: ``data`` is appended once, only it is searched for newlines
        (what was kept has none), and the consumed lines are cut off once at the end."""
        out: list = []
        if self._skipping:
            # The rest of a line already refused: drop it up to its end, keeping nothing.
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._skipping = False
            data = data[nl + 1:]
        buf = self._in
        scan = len(buf)
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", scan)
            if nl < 0:
                break
            if nl - start > self.max_line:
                out.append(BadLine(f"line longer than {self.max_line} bytes"))
            else:
                out.append(_decode(bytes(buf[start:nl])))
            start = scan = nl + 1
        del buf[:start]
        if len(buf) > self.max_line:
            out.append(BadLine(f"line longer than {self.max_line} bytes"))
            self._skipping = True
            buf.clear()
        return out

    # --- in a loop: never blocks ----------------------------------------------------------

    def receive(self) -> list | None:
        """The complete lines the (non-blocking) socket has now: dicts and BadLines, maybe
        none.  None when the peer has closed the connection (or broken it)."""
        if self.closed:
            return None
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        if self._closing:
            return []                    # its last answer is on the way: no more requests
        return self._lines(data)

    def send(self, msg, droppable: bool = False) -> bool:
        return self.send_line(encode(msg), droppable)

    def send_line(self, data: bytes, droppable: bool = False) -> bool:
        """Queue one encoded line and send what the socket takes now.  False if it was not
        queued: dropped (``droppable``, the buffer is full; counted in ``lost``) or the
        channel is closed (an answer found the buffer full: its peer does not read)."""
        if self.closed:
            return False
        self._announce_lost()
        room = self.out_max - len(self._out)
        if len(data) > room:
            if droppable:
                self.lost += 1
                return False
            if self._out:
                self.close()
                return False
        self._out += data
        self.flush()
        return not self.closed

    @property
    def streaming(self) -> bool:
        """A long answer is still going out (see ``stream``)."""
        return self._stream is not None

    def stream(self, lines: Iterator[bytes], done: Callable[[], None] | None = None) -> None:
        """Send the encoded ``lines`` of one long answer, each made (``next()``) only once the
        socket has taken all that came before, at most one per ``flush()``; ``done()`` runs
        when the last has been queued (or the channel closed).  Send nothing else meanwhile."""
        self._stream = iter(lines)
        self._stream_done = done
        self.flush()

    def _next_line(self) -> bool:
        """Queue the stream's next line; False (and the stream ends) when there is none."""
        assert self._stream is not None
        try:
            line = next(self._stream)
        except StopIteration:
            self._end_stream()
            return False
        self._out += line
        return True

    def _end_stream(self) -> None:
        done, self._stream, self._stream_done = self._stream_done, None, None
        if done is not None:
            done()

    def _announce_lost(self) -> bool:
        """Queue the notice of dropped messages once half the buffer is free again."""
        if not self.lost or len(self._out) >= self.out_max // 2:
            return False
        self._out += encode({"ok": True, "lost": self.lost})
        self.lost = 0
        return True

    def flush(self) -> None:
        """Send what the socket takes now (it is writable, or may be), and the next line of
        a stream once the socket has taken the rest."""
        made = False
        while not self.closed:
            if not self._out and not self._announce_lost():
                if self._stream is None or made or not self._next_line():
                    break
                made = True
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self._out[:n]
        if self.closed:
            return
        if self._closing and not self._out:
            self.close()
            return
        waiting = bool(self._out) or self._stream is not None
        if waiting != self._waiting:
            self._waiting = waiting
            if self.on_backlog is not None:
                self.on_backlog(waiting)

    def close_when_flushed(self) -> None:
        """Close once what is queued has gone out; read no more requests meanwhile."""
        self._closing = True
        self.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._out.clear()
        if self._stream is not None:
            self._end_stream()
        if self.on_close is not None:
            self.on_close()              # before the fd number can be reused
        try:
            self.sock.close()
        except OSError:
            pass

    # --- as a client: blocking ------------------------------------------------------------

    def write(self, msg) -> None:
        """Send one line, blocking up to ``timeout`` (OSError if it cannot)."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(encode(msg))

    def read(self, timeout=DEFAULT) -> dict | None:
        """The next line; None at the end of the stream.  Waits up to ``timeout`` seconds
        (the channel's own by default, None: for ever) and raises TimeoutError after; a line
        that is not a JSON object raises ControlError."""
        if timeout is DEFAULT:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if deadline is None:
                self.sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer in time")
                self.sock.settimeout(left)
            data = self.sock.recv(RECV_SIZE)
            if not data:
                return None
            self._ready += self._lines(data)
        msg = self._ready.pop(0)
        if isinstance(msg, BadLine):
            raise ControlError(f"the VTEP answered with a bad line: {msg.reason}")
        return msg

    def request(self, msg) -> dict | None:
        """Send ``msg`` and read its answer (None if the peer closed instead).

        A server that refuses a connection (busy, not root) says why in one line and closes
        it, maybe before our request arrives: the write then fails (EPIPE, or ECONNRESET
        when our request was left unread, see unix_release_sock()), but that line is still
        in our receive queue, and it is the answer."""
        try:
            self.write(msg)
        except (BrokenPipeError, ConnectionResetError):
            try:
                ans = self.read()
            except OSError:
                ans = None
            if ans is None:
                raise
            return ans
        return self.read()


def _decode(line: bytes):
    try:
        msg = json.loads(line)
    except ValueError as e:
        return BadLine(f"not JSON: {e}")
    except RecursionError:      # nested deeper than the parser's recursion limit
        return BadLine("not JSON: nested too deeply")
    if not isinstance(msg, dict):
        return BadLine("not a JSON object")
    return msg


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process on the other end of a connected Unix socket (SO_PEERCRED: for
    the client of a listening socket, the credentials its server had at listen())."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def shown(address: str) -> str:
    """An address as ss and /proc/net/unix show it: an abstract name with a leading ``@``."""
    return "@" + address[1:] if address.startswith("\0") else address


def connect(address: str, timeout: float | None = 5.0, max_line: int = ANSWER_MAX) -> Channel:
    """A blocking client channel to the abstract or path Unix socket ``address`` (OSError if
    nobody listens: ECONNREFUSED, or EAGAIN/TimeoutError when its backlog is full).

    ControlError, before anything is sent, if the socket is not held by root: an abstract
    name can be bound by any user of the namespace, and such a server would be told our
    requests and could answer them with anything."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        uid = peer_uid(sock)
    except OSError:
        sock.close()
        raise
    if uid != 0:
        sock.close()
        raise ControlError(f"the control socket {shown(address)} is held by uid {uid}, not "
                           "root: refusing to talk to it")
    return Channel(sock, max_line=max_line, timeout=timeout)


def is_busy(e: OSError) -> bool:
    """A connect() that failed because the server does not accept (its backlog is full), as
    opposed to nobody listening at all."""
    return isinstance(e, TimeoutError) or e.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
