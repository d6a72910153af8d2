"""A throw-away LAN of Linux network namespaces for end-to-end tests and benchmarks.

What it owns: one *switch* namespace holding a bridge (``br0``, multicast snooping off
so mDNS floods to every port) and one namespace per node, joined to the bridge by a
veth pair (``eth0`` in the node, ``p<k>`` in the switch).  Nodes get ``10.X.0.<k+1>/24``,
loopback up (the node's local API listens on 127.0.0.1 inside its namespace) and a
route for ``224.0.0.0/4`` via ``eth0`` so multicast mDNS works between them.  Links can
be shaped with ``tc tbf``: a node's *upload* is the egress of its ``eth0``, its
*download* the egress of its switch port.  Processes run inside a namespace with
``ip netns exec`` (which ``exec``\\ s, so the Popen pid is the program's own pid).

Rules:
* Everything is named ``<prefix>-...`` with a prefix unique to this process
  (``emt<pid>`` by default), and only what this object created is ever removed.  No
  link, route or rule is added to the machine's own namespace: veth pairs are created
  inside the switch namespace, so nothing ever appears on the real interfaces.
* :meth:`Lan.close` is idempotent and runs every step even if one fails: it kills the
  processes it started (by pid: SIGTERM, then SIGKILL), then deletes the namespaces
  (which deletes their veths, bridge and qdiscs).  Use ``with Lan(...) as lan:``.
* Needs root and iproute2; :class:`NetnsUnavailable` says why when it cannot run (the
  pytest fixture turns that into a skip).

Non-goals: latency and loss (netem is not available on these kernels; see
``notes/py-libp2p-0.8.1.md``), IPv6 (disabled inside the namespaces: it only adds
neighbour-discovery chatter), routing between LANs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

#: Seconds a process gets between SIGTERM and SIGKILL at teardown: an edgemesh node
#: unregisters its mDNS record and closes its host in well under a second.
TERM_GRACE_S = 5.0
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot build the namespace LAN; the message says why."""


def check_available() -> None:
    """Raise :class:`NetnsUnavailable` unless we are root on Linux with iproute2 and tc."""
    if not sys.platform.startswith("linux"):
        raise NetnsUnavailable("network namespaces need Linux")
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (run the tests as root)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"'{tool}' (iproute2) is not installed")


def tbf_params(rate_mbit: float) -> tuple[int, int]:
    """(burst bytes, queue limit bytes) for a ``tbf`` shaper at ``rate_mbit``.

    Burst: 4 ms worth of tokens, at least 32 KiB.  A burst much below one GSO
    super-packet (64 KiB on veth) makes tbf segment and wake up for every MTU, which
    costs CPU and lowers the achieved rate; a much larger one lets short spikes pass
    above the rate.  Queue limit: 40 ms at the rate, at least 128 KiB, so a single
    TCP flow's window fits (a tighter queue makes TCP lose and back off and measure
    well below the set rate) without building seconds of bufferbloat.
    Measured with :meth:`Lan.measure_throughput` on the bench machine: see
    ``docs/lan-testing.md``.
    """
    rate_bytes = rate_mbit * 1e6 / 8
    burst = max(32 * 1024, int(rate_bytes * 0.004))
    limit = max(128 * 1024, int(rate_bytes * 0.040)) + burst
    return burst, limit


@dataclass
class NetNode:
    """One namespace on the LAN."""

    index: int
    ns: str
    ip: str
    port: str  # the veth end in the switch namespace
    up_mbit: float | None = None
    down_mbit: float | None = None


@dataclass
class Proc:
    """A process started inside a namespace (its pid is the program's own)."""

    node: NetNode
    argv: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds so far (None once the process is gone)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def runqueue_wait_seconds(self) -> float | None:
        """Seconds its main thread (where trio's loop runs) spent runnable but waiting
        for a CPU (``/proc/PID/schedstat``): how much CPU contention delayed it."""
        try:
            return int(Path(f"/proc/{self.pid}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None


class Lan:
    """A bridge LAN of ``n`` namespaces.  Use as a context manager."""

    def __init__(
        self,
        n: int,
        *,
        prefix: str | None = None,
        subnet: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        if not 1 <= n <= 200:
            raise ValueError("a LAN of 1 to 200 nodes")
        self.prefix = prefix or f"emt{os.getpid()}"
        if len(self.prefix) > 12:
            raise ValueError("prefix too long for interface names")
        self.subnet = subnet if subnet is not None else 100 + os.getpid() % 150
        self.switch = f"{self.prefix}-sw"
        self.nodes = [
            NetNode(k, f"{self.prefix}-n{k}", f"10.{self.subnet}.0.{k + 1}", f"p{k}")
            for k in range(n)
        ]
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"{self.prefix}-logs-"))
        self.procs: list[Proc] = []
        self._made: list[str] = []  # namespaces created, in order
        self._closed = False

    # -- build and tear down -------------------------------------------------------------

    def __enter__(self) -> Lan:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        check_available()
        self._add_ns(self.switch)
        sw = ["ip", "-n", self.switch]
        _run([*sw, "link", "set", "lo", "up"])
        _run([*sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        _run([*sw, "link", "set", "br0", "up"])
        self._sysctl(self.switch, "net/ipv6/conf/all/disable_ipv6", "1")
        for node in self.nodes:
            self._add_ns(node.ns)
            self._sysctl(node.ns, "net/ipv6/conf/all/disable_ipv6", "1")
            self._sysctl(node.ns, "net/ipv6/conf/default/disable_ipv6", "1")
            # created inside the switch namespace, the peer end moved straight into the
            # node's: no interface ever exists in the machine's own namespace
            _run(
                [
                    *sw,
                    "link",
                    "add",
                    node.port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    node.ns,
                ]
            )
            _run([*sw, "link", "set", node.port, "master", "br0"])
            _run([*sw, "link", "set", node.port, "up"])
            ns = ["ip", "-n", node.ns]
            _run([*ns, "link", "set", "lo", "up"])
            _run([*ns, "addr", "add", f"{node.ip}/24", "dev", "eth0"])
            _run([*ns, "link", "set", "eth0", "up"])
            _run([*ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])

    def _add_ns(self, name: str) -> None:
        try:
            _run(["ip", "netns", "add", name])
        except subprocess.CalledProcessError as e:
            raise NetnsUnavailable(f"cannot create network namespace {name}: {e.stderr}") from e
        self._made.append(name)

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _run(["ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > /proc/sys/{key}"])

    def close(self) -> None:
        """Kill our processes (by pid), then delete our namespaces.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for p in self.procs:
            try:
                stop(p)
            except Exception as e:  # noqa: BLE001 -- teardown must go on
                errors.append(f"pid {p.pid}: {e}")
        for ns in reversed(self._made):
            try:
                _run(["ip", "netns", "del", ns])
            except subprocess.CalledProcessError as e:
                errors.append(f"netns {ns}: {e.stderr.strip()}")
        self._made.clear()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        left = [ns for ns in list_namespaces() if ns.startswith(self.prefix + "-")]
        if errors or left:
            raise RuntimeError(f"LAN teardown incomplete: {errors} remaining: {left}")

    # -- shaping -------------------------------------------------------------------------

    def shape(
        self, node: NetNode, *, up_mbit: float | None = None, down_mbit: float | None = None
    ) -> None:
        """Limit the node's upload (its eth0 egress) and/or download (its switch port's
        egress) with ``tc tbf``; None leaves that direction unshaped."""
        if up_mbit is not None:
            _tbf(node.ns, "eth0", up_mbit)
            node.up_mbit = up_mbit
        if down_mbit is not None:
            _tbf(self.switch, node.port, down_mbit)
            node.down_mbit = down_mbit

    def qdisc_stats(self, node: NetNode) -> dict[str, Any]:
        """``tc -s -j qdisc`` of the node's eth0 and switch port (drops, overlimits)."""
        out = {}
        for where, ns, dev in (("up", node.ns, "eth0"), ("down", self.switch, node.port)):
            r = _run(["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev])
            out[where] = json.loads(r.stdout or "[]")
        return out

    # -- processes -----------------------------------------------------------------------

    def popen(
        self,
        node: NetNode,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        nice: int = 0,
    ) -> Proc:
        """Start ``argv`` inside ``node``'s namespace; stdout/stderr go to files in
        ``log_dir`` (``<name>.out`` / ``<name>.err``; a temporary directory removed at
        close unless ``log_dir`` was given)."""
        args = [str(a) for a in argv]
        full = ["ip", "netns", "exec", node.ns, *args]
        if nice:
            full = ["nice", "-n", str(nice), *full]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = name or f"{node.ns}-{len(self.procs)}"
        out_path, err_path = self.log_dir / f"{stem}.out", self.log_dir / f"{stem}.err"
        files: list[IO[bytes]] = [out_path.open("wb"), err_path.open("wb")]
        try:
            popen = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=files[0],
                stderr=files[1],
                env=env,
                cwd=cwd,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not them
            )
        except BaseException:
            for f in files:
                f.close()
            raise
        proc = Proc(node, args, popen, out_path, err_path, files)
        self.procs.append(proc)
        return proc

    def run(
        self,
        node: NetNode,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside ``node``'s namespace, capturing output."""
        return subprocess.run(
            ["ip", "netns", "exec", node.ns, *map(str, argv)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    def in_netns(self, ns: str, fn: Callable[[], T]) -> T:
        """Run ``fn()`` inside namespace ``ns`` without starting a process: a short-lived
        thread enters it with ``setns(2)`` (which changes only that thread), calls
        ``fn`` and exits.  Sockets it creates stay in that namespace."""
        result: list[T] = []
        error: list[BaseException] = []

        def work() -> None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
                with open(f"/run/netns/{ns}", "rb") as f:
                    if libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns {ns}: {os.strerror(err)}")
                result.append(fn())
            except BaseException as e:  # noqa: BLE001 -- handed to the caller
                error.append(e)

        t = threading.Thread(target=work, name=f"setns-{ns}")
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    def connect(self, node: NetNode, host: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP socket connected from inside ``node``'s namespace (e.g. to its local
        API on 127.0.0.1), without starting a process."""
        return self.in_netns(node.ns, lambda: socket.create_connection((host, port), timeout))

    def port_bytes(self) -> dict[int, tuple[int, int]]:
        """Per node index, (bytes it sent, bytes it received) so far, counted at its
        switch port (``/proc/thread-self/net/dev`` read inside the switch namespace:
        one cheap read for the whole LAN, Ethernet frames included)."""
        text = self.in_netns(self.switch, lambda: Path("/proc/thread-self/net/dev").read_text())
        by_port = {n.port: n.index for n in self.nodes}
        out = {}
        for line in text.splitlines()[2:]:
            name, _, rest = line.partition(":")
            f = rest.split()
            if name.strip() in by_port:
                # the port receives what the node sends, and transmits what it receives
                out[by_port[name.strip()]] = (int(f[0]), int(f[8]))
        return out

    def http_get_json(self, node: NetNode, port: int, path: str, timeout: float = 5.0) -> Any:
        """GET ``http://127.0.0.1:port/path`` inside the node's namespace (HTTP/1.1,
        ``Connection: close``), decoded as JSON."""
        with self.connect(node, "127.0.0.1", port, timeout) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head else b"?"
        if status != b"200":
            raise RuntimeError(f"GET {path} on {node.ns}: HTTP {status.decode()}: {body[:200]!r}")
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return json.loads(body)

    def measure_throughput(
        self, src: NetNode, dst: NetNode, *, seconds: float = 3.0, port: int = 5201
    ) -> float:
        """Mbit/s of one TCP flow from ``src`` to ``dst`` (a Python sender and sink,
        run in the namespaces; the sink times from the first to the last byte)."""
        sink = self.popen(
            dst, [sys.executable, "-c", _SINK, dst.ip, str(port)], name=f"sink-{dst.index}"
        )
        try:
            _wait_listening(self, dst, dst.ip, port)
            self.run(
                src,
                [sys.executable, "-c", _SOURCE, dst.ip, str(port), str(seconds)],
                timeout=seconds + 30,
            )
            sink.popen.wait(timeout=30)
            nbytes, secs = json.loads(sink.stdout() or "null") or (0, 1.0)
        finally:
            stop(sink)
        return float(nbytes) * 8 / secs / 1e6


# -- helpers -------------------------------------------------------------------------


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)


def _tbf(ns: str, dev: str, rate_mbit: float) -> None:
    burst, limit = tbf_params(rate_mbit)
    _run(
        [
            "tc",
            "-n",
            ns,
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            f"{rate_mbit}mbit",
            "burst",
            str(burst),
            "limit",
            str(limit),
        ]
    )


def list_namespaces() -> list[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def stop(p: Proc, grace: float = TERM_GRACE_S) -> int:
    """SIGTERM the process (by pid), SIGKILL it after ``grace`` seconds; its exit code."""
    try:
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGTERM)
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.kill()
                p.popen.wait(timeout=10)
    finally:
        for f in p._files:
            f.close()
    return p.popen.returncode


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``pred()`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _wait_listening(lan: Lan, node: NetNode, host: str, port: int) -> None:
    def ok() -> bool:
        try:
            lan.connect(node, host, port, timeout=1.0).close()
        except OSError:
            return False
        return True

    wait_for(ok, 10.0, f"{host}:{port} in {node.ns}")


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


@contextlib.contextmanager
def lan(n: int, **kw: Any) -> Iterator[Lan]:
    """``with lan(5) as net: ...``: build, yield, always tear down."""
    with Lan(n, **kw) as net:
        yield net


# One TCP flow: the sink accepts one connection, the source writes 1 MiB blocks for the
# given time.  (The first connection is the readiness probe of _wait_listening; skip it.)
_SINK = """
import json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
while True:
    c, _ = s.accept()
    n = 0; t0 = None; t1 = None
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        t1 = time.monotonic(); t0 = t0 or t1; n += len(b)
    if n:
        print(json.dumps([n, max((t1 or 0) - (t0 or 0), 1e-6)])); break
"""
_SOURCE = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
buf = b"x" * (1 << 20); end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    c.sendall(buf)
c.close()
"""
