"""Discovery adapter: mDNS with zeroconf on chosen interfaces.

What it owns: one ``Zeroconf`` instance bound to the given interface addresses, the
node's service record (``<peer id>._edgemesh._tcp.local.``, TXT: mesh name, peer id,
dialable multiaddrs) and a browser for the same service type.

Rules (notes/py-libp2p-0.8.1.md):
* Our own service type and TXT records, not libp2p's mDNS module: it has no interface
  option and would mix unrelated libp2p nodes (IPFS, ...) into the mesh.  Records of
  another mesh are ignored.
* zeroconf calls back on its own thread; everything is handed to trio through the
  trio token, and resolving runs on a worker thread.  ``found``/``lost`` are called on
  the trio thread.
* Only concrete addresses are advertised (``0.0.0.0`` cannot be dialled).
* A peer whose record is removed or expires is reported ``lost``.
* Tests bind to 127.0.0.1 or run in a network namespace: never multicast on the real
  interfaces of a test machine.

Non-goals: deciding whom to dial (the core), static ``--peer`` addresses (the driver).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from mesh.errors import ConfigError

SERVICE_TYPE = "_edgemesh._tcp.local."
#: How long to wait for a peer's record when resolving it (ms).
RESOLVE_TIMEOUT_MS = 3000
MAX_ADDRS = 8

log = logging.getLogger("edgemesh.discovery")


def _properties(mesh: str, peer_id: str, addrs: list[str]) -> dict[str, str]:
    props = {"mesh": mesh, "peer": peer_id}
    for i, a in enumerate(addrs[:MAX_ADDRS]):
        props[f"a{i}"] = a
    return props


@contextlib.asynccontextmanager
async def open_discovery(
    interfaces: list[str],
    *,
    mesh: str,
    peer_id: str,
    addrs: list[str],
    found: Callable[[str, list[str]], None],
    lost: Callable[[str], None],
    registered: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Advertise this node and report others of the same mesh until the block ends;
    ``registered`` is called once others can see us (the registration's probing done)."""
    token = trio.lowlevel.current_trio_token()
    try:
        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        )
    except OSError as e:
        raise ConfigError(f"cannot start mDNS on {', '.join(interfaces)}: {e}") from None
    port = 0
    ips = []
    for a in addrs:
        parts = a.split("/")
        if len(parts) > 4 and parts[1] == "ip4" and parts[3] == "tcp":
            ips.append(parts[2])
            port = port or int(parts[4])
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{peer_id}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(ip) for ip in dict.fromkeys(ips)],
        port=port,
        properties=_properties(mesh, peer_id, addrs),
    )
    known: dict[str, str] = {}  # service name -> peer id

    async def resolve(name: str) -> None:
        peer_info = await trio.to_thread.run_sync(
            lambda: zc.get_service_info(SERVICE_TYPE, name, RESOLVE_TIMEOUT_MS),
            abandon_on_cancel=True,  # type: ignore[call-arg]  # trio's decorator hides it
        )
        if peer_info is None:
            return
        props = {
            (k.decode(errors="replace") if isinstance(k, bytes) else str(k)): (
                v.decode(errors="replace") if isinstance(v, bytes) else ""
            )
            for k, v in (peer_info.properties or {}).items()
        }
        if props.get("mesh") != mesh:
            return
        peer = props.get("peer", "")
        if not peer or peer == peer_id:
            return
        peer_addrs = [v for k, v in sorted(props.items()) if k[:1] == "a" and k[1:].isdigit()]
        peer_addrs = [a if "/p2p/" in a else f"{a}/p2p/{peer}" for a in peer_addrs]
        known[name] = peer
        found(peer, peer_addrs)

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:  # zeroconf's thread
        def in_trio() -> None:
            if state_change is ServiceStateChange.Removed:
                peer = known.pop(name, None)
                if peer is not None:
                    lost(peer)
            else:
                with contextlib.suppress(RuntimeError):  # closing: nursery no longer open
                    nursery.start_soon(resolve, name)

        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(in_trio)

    async with trio.open_nursery() as nursery:
        browser = None
        try:
            # browse first: registering probes the network for ~1.7 s
            browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
            await trio.to_thread.run_sync(
                lambda: zc.register_service(info),
                abandon_on_cancel=True,  # type: ignore[call-arg]  # trio's decorator hides it
            )
            if registered is not None:
                registered()
            yield
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_shutdown, zc, browser, info)


def _shutdown(zc: Zeroconf, browser: Any, info: ServiceInfo) -> None:
    if browser is not None:
        with contextlib.suppress(Exception):
            browser.cancel()
    with contextlib.suppress(Exception):
        zc.unregister_service(info)
    zc.close()
