"""The libp2p host adapter on real py-libp2p over loopback: identity persistence,
listen addresses, and transport security (Noise only: a plaintext peer cannot connect).
"""

from __future__ import annotations

from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from mesh.errors import ConfigError
from mesh.runtime.host import (
    concrete_listen_addrs,
    full_addrs,
    load_identity,
    open_host,
)

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
PROTO = TProtocol("/edgemesh-test/echo/1")


def test_identity_is_created_once_and_kept(tmp_path: Path) -> None:
    a = load_identity(tmp_path / "id")
    b = load_identity(tmp_path / "id")
    assert a.public_key.to_bytes() == b.public_key.to_bytes()
    assert (tmp_path / "id" / "ed25519.seed").stat().st_mode & 0o777 == 0o600


def test_damaged_identity_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "id").mkdir()
    (tmp_path / "id" / "ed25519.seed").write_bytes(b"short")
    with pytest.raises(ConfigError, match=r"damaged .* delete it"):
        load_identity(tmp_path / "id")


def test_listen_addresses_are_concrete() -> None:
    expanded = [str(a) for a in concrete_listen_addrs(["/ip4/0.0.0.0/tcp/4101"])]
    assert expanded
    assert all("0.0.0.0" not in a for a in expanded)
    assert "/ip4/127.0.0.1/tcp/4101" in expanded
    with pytest.raises(ConfigError, match="not a /ip4/ADDR/tcp/PORT"):
        concrete_listen_addrs(["127.0.0.1:4101"])


async def _echo(stream: object) -> None:
    data = await stream.read(100)  # type: ignore[attr-defined]
    await stream.write(data)  # type: ignore[attr-defined]
    await stream.close()  # type: ignore[attr-defined]


async def test_noise_peer_connects(tmp_path: Path) -> None:
    async with (
        open_host(load_identity(tmp_path / "a"), LOOPBACK) as a,
        open_host(load_identity(tmp_path / "b"), LOOPBACK) as b,
    ):
        a.set_stream_handler(PROTO, _echo)
        with trio.fail_after(20):
            await b.connect(info_from_p2p_addr(multiaddr.Multiaddr(full_addrs(a)[0])))
            s = await b.new_stream(a.get_id(), [PROTO])
            await s.write(b"hello")
            assert await s.read(100) == b"hello"


async def test_plaintext_only_peer_cannot_connect(tmp_path: Path) -> None:
    kp = create_new_key_pair()
    plain = new_host(
        key_pair=kp,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)},
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    served = []

    async def handler(stream: object) -> None:
        served.append(stream)
        await _echo(stream)

    async with (
        open_host(load_identity(tmp_path / "a"), LOOPBACK) as ours,
        plain.run(listen_addrs=LOOPBACK),
    ):
        ours.set_stream_handler(PROTO, handler)
        target = info_from_p2p_addr(multiaddr.Multiaddr(full_addrs(ours)[0]))
        connected = False
        with trio.move_on_after(10):
            try:
                await plain.connect(target)
                s = await plain.new_stream(ours.get_id(), [PROTO])
                await s.write(b"cleartext")
                connected = await s.read(100) == b"cleartext"
            except Exception:  # noqa: BLE001 -- any failure is the expected outcome
                connected = False
        assert not connected
        assert not served
        assert ours.get_id() not in plain.get_network().connections or not served
        await plain.close()
