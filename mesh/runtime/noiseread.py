"""Reading Noise transport messages with one wake-up per message (``SO_RCVLOWAT``).

What it owns: how a Noise message (2-byte length, then at most 65535 bytes) is read
off a connection's TCP socket, installed over py-libp2p's ``NoisePacketReadWriter.
read_msg`` by :func:`install` (``mesh.runtime.host`` calls it for every host).

Why (ADR 0006, "Receive wake-ups"): py-libp2p reads a message body with
``read_exactly``, which asks the socket for the missing bytes again and again.  On a
shaped or slow link the bytes of one 64 KiB message trickle in a few packets at a
time, so each message cost a device ~18 ``recv`` calls, as many ``epoll`` wake-ups and
as many trips through trio's and py-libp2p's Python read path (measured on
``bench_lan``'s 50 Mbit/s links: ~1700 ``recv`` and ~2600 ``epoll_wait`` per second per
device, the devices' CPU ~5 s each for 96 MiB, on a 2-core machine that then queued
them).  Here, when a body is not all there yet, the socket's receive low-water mark is
set to exactly the bytes still missing: the kernel then reports the socket readable
once the rest of the message has arrived (or the connection ends), so the remainder
is taken in one read.

Rules:
* The low-water mark never exceeds the bytes the peer has already committed to: the
  rest of the message whose length prefix was read.  So a wait can always end (Linux
  also reports readability when the receive window closes or the peer hangs up), and
  in case a kernel does not, a wait with the mark raised lasts at most ``LOWAT_WAIT``;
  the rest of that message is then read the plain way.
* It is restored to 1 before returning, error or not: whatever reads this socket next
  (the next length prefix, or any other reader) sees the default.
* Only the bytes of this message are read (no read-ahead buffer of ours): any other
  reader of the connection sees exactly what it would have seen.
* Without a reachable OS socket (another transport, another py-libp2p layout) or where
  the option is refused, this is py-libp2p's own exact read.
* End of stream before the message is complete raises py-libp2p's
  ``IncompleteReadError``, as ``read_exactly`` does (unlike it, a slow message that
  arrives in more than 100 pieces is not mistaken for a closed connection).

Non-goals: the write side (a writer already sleeps until a third of the send buffer is
free), other security transports.
"""

from __future__ import annotations

import contextlib
import math
import socket
from typing import Any

import trio
from libp2p.io.exceptions import IncompleteReadError
from libp2p.io.utils import read_exactly
from libp2p.security.noise.io import NoisePacketReadWriter

#: Bytes of a Noise message's length prefix (py-libp2p: ``SIZE_NOISE_MESSAGE_LEN``).
LENGTH_BYTES = 2
#: Longest wait for the rest of a message with the mark raised; after it the rest is
#: read the plain way (one wake-up per packet).  64 KiB take 0.05 s at 10 Mbit/s.
LOWAT_WAIT = 0.5
_SO_RCVLOWAT: int | None = getattr(socket, "SO_RCVLOWAT", None)
_installed = False


def install() -> None:
    """Read Noise messages with :func:`read_noise_msg` from now on (idempotent)."""
    global _installed
    if _installed or _SO_RCVLOWAT is None:
        return
    NoisePacketReadWriter.read_msg = read_noise_msg  # type: ignore[method-assign]
    _installed = True


def tcp_socket(conn: Any) -> Any | None:
    """The trio socket under a py-libp2p ``RawConnection`` over TCP (``TrioTCPStream``
    -> ``trio.SocketStream`` -> socket), or None."""
    sock = getattr(getattr(getattr(conn, "stream", None), "stream", None), "socket", None)
    if sock is None or not callable(getattr(sock, "setsockopt", None)):
        return None
    return sock


async def read_noise_msg(self: Any) -> bytes:
    """``NoisePacketReadWriter.read_msg`` (``self`` is one): one length-prefixed Noise
    message."""
    conn = self.read_write_closer
    length = int.from_bytes(await read_exactly(conn, LENGTH_BYTES), "big")
    return await read_body(conn, length)


async def read_body(conn: Any, n: int) -> bytes:
    """Exactly ``n`` bytes of ``conn``, waiting for the missing ones in one wake-up."""
    if n <= 0:
        return b""
    first: bytes = await conn.read(n)
    if len(first) >= n:
        return first
    if not first:
        raise _incomplete(n, 0)
    sock = tcp_socket(conn)
    if sock is None or _SO_RCVLOWAT is None:
        rest: bytes = await read_exactly(conn, n - len(first))
        return first + rest
    parts = [first]
    got = len(first)
    lowat = 1
    marked = True  # wait with the mark (until a wait runs past LOWAT_WAIT)
    try:
        while got < n:
            want = n - got
            if marked and want != lowat:
                # (refused: plain reads still work, one wake-up per packet)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, want)
                    lowat = want
            piece = b""
            with trio.move_on_after(LOWAT_WAIT if lowat > 1 else math.inf) as scope:
                piece = await conn.read(want)
            if scope.cancelled_caught:
                # Not reported readable in time: a very slow link, or a kernel that does
                # not wake a reader when its window closes below the mark.  The rest of
                # this message is read the plain way.  (A cancelled read took no bytes.)
                marked = False
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, 1)
                    lowat = 1
                continue
            if not piece:
                raise _incomplete(n, got)
            parts.append(piece)
            got += len(piece)
    finally:
        if lowat != 1:
            # (an error here means the socket is gone: nobody reads it again)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, 1)
    return b"".join(parts)


def _incomplete(n: int, got: int) -> IncompleteReadError:
    return IncompleteReadError(
        f"Connection closed during read operation: expected {n} bytes but received {got} bytes",
        expected_bytes=n,
        received_bytes=got,
    )
