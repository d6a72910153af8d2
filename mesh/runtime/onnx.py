"""onnxruntime adapter: loading a model file into an inference session.

Rules:
* onnxruntime exceptions never escape; they become
  :class:`~mesh.errors.ModelFormatError` with onnxruntime's first line of explanation.
* A session's weights go into huge pages where the kernel allows it (Linux; ADR 0004,
  "Weights in huge pages"): a run of a model larger than the CPU caches streams every
  weight from memory, and with 4 KiB pages it also walks the page tables for each one.
  Measured on the 50 MB MLP of ``bench_inference``: 2.65-3.5 ms per run with 4 KiB
  pages, different for every session (where its pages happened to land), 2.27-2.39 ms
  once they are collapsed into 2 MiB pages.  The memory mappings that appeared while
  the session loaded and are nearly fully resident (its weights; not another thread's
  stack) are collapsed with ``MADV_COLLAPSE`` before the session is returned, off the
  serving path.  Nothing changes where THP is switched off (``never``) or the kernel
  refuses (an old kernel, another OS).

Non-goals: activation policy (the core's rollout state machine decides).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import onnxruntime as ort

from mesh.errors import ModelFormatError

#: Publishing loads the model once to prove onnxruntime accepts it.  Loading holds the
#: whole model in memory, so above this size publish checks structure only and each
#: node's activation pipeline performs the full load before anything goes live.
LOAD_CHECK_MAX_BYTES = 512 * 1024 * 1024


#: Mappings smaller than this are left alone (a huge page is 2 MiB; small mappings are
#: not the weights).
HUGE_MIN_BYTES = 4 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25  # Linux 6.1


def new_session(path: Path, *, threads: int = 1) -> ort.InferenceSession:
    before = _anon_mappings()
    session = _new_session(path, threads)
    if before is not None:
        collapse_new_mappings(before)
    return session


def _anon_mappings() -> dict[tuple[int, int], int] | None:
    """The process's writable anonymous mappings of at least ``HUGE_MIN_BYTES``:
    (start, end) -> resident bytes; None where there is no ``/proc/self/smaps`` (not
    Linux) or huge pages are switched off (``transparent_hugepage/enabled`` is
    ``never``: the administrator's choice, which ``MADV_COLLAPSE`` would ignore)."""
    if not sys.platform.startswith("linux") or _thp_never():
        return None
    out: dict[tuple[int, int], int] = {}
    current: tuple[int, int] | None = None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                if current is not None and line.startswith("Rss:"):
                    out[current] = int(line.split()[1]) * 1024
                    current = None
                    continue
                parts = line.split()
                if not parts or "-" not in parts[0] or len(parts) < 5:
                    continue  # a field line
                current = None
                if "w" not in parts[1] or len(parts) > 5:
                    continue  # read-only, a file, the heap (may hold freed space), stack
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                if hi - lo >= HUGE_MIN_BYTES:
                    current = (lo, hi)
    except (OSError, ValueError):
        return None
    return out


def _thp_never() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" in f.read()
    except OSError:
        return False


#: Only mappings at least this full are collapsed: loaded weights are written in full,
#: while a thread's stack or an allocator's reserve (also mapped during a load, by other
#: threads) is mostly untouched, and collapsing it would make all of it resident.
RESIDENT_MIN = 0.9


def collapse_new_mappings(before: dict[tuple[int, int], int]) -> int:
    """Ask the kernel to back the large, nearly fully resident anonymous mappings that
    are not in ``before`` with huge pages; the bytes it collapsed (0 where it cannot)."""
    after = _anon_mappings()
    if not after:
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    known = {lo for lo, _ in before}
    for (lo, hi), resident in sorted(after.items()):
        if lo in known or resident < RESIDENT_MIN * (hi - lo):
            continue  # there before the session, or mostly untouched: not its weights
        start = (lo + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
        end = hi & ~(_HUGE_PAGE - 1)
        if end <= start:
            continue
        madvise(start, end - start, _MADV_HUGEPAGE)
        if madvise(start, end - start, _MADV_COLLAPSE) == 0:
            done += end - start
    return done


def _new_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: onnxruntime warnings are not user-facing
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises many unrelated types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFormatError(f"onnxruntime cannot load {path.name}: {first[:300]}") from None


def load_check(path: Path, total_bytes: int) -> bool:
    """Load ``path`` in onnxruntime if the model (``total_bytes`` with its external
    data) is small enough; True if it was loaded."""
    if total_bytes > LOAD_CHECK_MAX_BYTES:
        return False
    new_session(path)
    return True
