"""libp2p host adapter: identity, transport security, listen addresses.

What it owns: the node's persisted Ed25519 identity (``DATA_DIR/identity/ed25519.seed``,
mode 0600) and a py-libp2p host restricted to TCP + Noise + Yamux.

Rules (DESIGN §3, notes/py-libp2p-0.8.1.md):
* Security is Noise only: py-libp2p's defaults also accept ``/plaintext/2.0.0`` and
  secio, and a plaintext-only peer would connect and talk in cleartext.
* Muxer is Yamux only (mplex is 7x slower and not needed); QUIC stays off.
* py-libp2p's auto-connector (which dials every known peer to reach ~200
  connections) is switched off: the core chooses its peers.
* ``max_connections_per_peer=1``: otherwise ``connect()`` waits 250 ms and two
  dials between the same pair leave two connections.
* Listen on concrete addresses: ``0.0.0.0`` would be advertised to peers, who cannot
  dial it, so it is expanded into the machine's interface addresses.
* Noise messages are read with one wake-up each (:mod:`mesh.runtime.noiseread`).
* Leaving :func:`open_host` always closes the host (else 3 fds leak per host and the
  remote keeps the connection).

Non-goals: what runs over the host (chunk protocol, gossip, discovery: their own
adapters, wired by :mod:`mesh.runtime.driver`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_keypair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from mesh.datadir import write_file_atomic
from mesh.errors import ConfigError
from mesh.runtime import noiseread

SEED_FILE = "ed25519.seed"


def load_identity(identity_dir: Path) -> KeyPair:
    """The node's Ed25519 key pair, created on first use.  The peer id stays the same
    across restarts."""
    path = identity_dir / SEED_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        seed = os.urandom(32)
        write_file_atomic(path, seed, what="node identity", mode=0o600)
    except OSError as e:
        raise ConfigError(f"cannot read node identity {path}: {e.strerror}") from None
    if len(seed) != 32:
        raise ConfigError(
            f"node identity {path} is damaged ({len(seed)} bytes, expected 32); "
            "delete it to create a new peer id"
        )
    return create_new_key_pair(seed)


def interface_addresses() -> list[str]:
    """IPv4 addresses of this machine's interfaces (loopback last)."""
    addrs: list[str] = []
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            ip = str(info[4][0])
            if ip not in addrs and not ip.startswith("127."):
                addrs.append(ip)
    # the address of the default route's interface (no packet is sent)
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
        if ip not in addrs and not ip.startswith("127."):
            addrs.insert(0, ip)
    addrs.append("127.0.0.1")
    return addrs


def concrete_listen_addrs(addrs: list[str]) -> list[multiaddr.Multiaddr]:
    """Parse listen multiaddrs; ``/ip4/0.0.0.0/tcp/P`` becomes one per interface."""
    out: list[multiaddr.Multiaddr] = []
    for text in addrs:
        try:
            ma = multiaddr.Multiaddr(text)
            ip = ma.value_for_protocol("ip4")
            port = ma.value_for_protocol("tcp")
        except Exception:  # noqa: BLE001 -- multiaddr raises several unrelated types
            raise ConfigError(
                f"listen address {text!r} is not a /ip4/ADDR/tcp/PORT multiaddr"
            ) from None
        if ip == "0.0.0.0":
            out += [multiaddr.Multiaddr(f"/ip4/{a}/tcp/{port}") for a in interface_addresses()]
        else:
            out.append(ma)
    return out


async def _no_auto_connect(nursery: trio.Nursery) -> None:
    return None


def _new_host(key_pair: KeyPair, psk: str | None) -> Any:
    noiseread.install()  # one wake-up per Noise message (ADR 0006)
    noise = NoiseTransport(key_pair, noise_privkey=x25519_keypair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        muxer_opt={TProtocol(YAMUX_ID): Yamux},
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        enable_quic=False,
        psk=psk,
    )
    # py-libp2p's connection manager dials every peer in its peerstore until it has
    # ~200 connections.  Whom to connect to is the core's decision (max_peers), so the
    # auto-connector never starts.
    network: Any = host.get_network()
    network.auto_connector.run_background_task = _no_auto_connect
    return host


@contextlib.asynccontextmanager
async def open_host(
    key_pair: KeyPair, listen: list[multiaddr.Multiaddr], *, psk: str | None = None
) -> AsyncIterator[Any]:
    """A running host listening on ``listen``; closed on exit."""
    host = _new_host(key_pair, psk)
    try:
        async with host.run(listen_addrs=listen):
            try:
                yield host
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await host.close()
    except OSError as e:
        raise ConfigError(f"cannot listen on {', '.join(map(str, listen))}: {e}") from None


def full_addrs(host: Any) -> list[str]:
    """Dialable multiaddrs of ``host`` including ``/p2p/<peer id>``."""
    pid = host.get_id().to_string()
    out = []
    for a in host.get_addrs():
        text = str(a)
        out.append(text if "/p2p/" in text else f"{text}/p2p/{pid}")
    return out
