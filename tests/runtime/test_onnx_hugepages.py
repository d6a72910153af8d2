"""Session weights in huge pages (mesh.runtime.onnx): the mappings a session load adds
are collapsed where the kernel allows it; nothing else is touched; results are the
same."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from mesh.modelgen import write_example_model
from mesh.runtime import onnx as ox

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "absent"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "absent"


def _anon_huge_kib() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def test_a_session_gives_the_same_outputs_with_its_weights_collapsed(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    width = write_example_model(path, size_bytes=12 << 20, seed=3)
    x = {"x": np.random.default_rng(1).standard_normal((2, width)).astype(np.float32)}
    plain = ox._new_session(path, 1)
    collapsed = ox.new_session(path)
    name = plain.get_outputs()[0].name
    np.testing.assert_array_equal(plain.run([name], x)[0], collapsed.run([name], x)[0])


@linux
def test_only_mappings_made_since_the_snapshot_are_collapsed() -> None:
    if _thp_mode() in ("never", "absent"):
        pytest.skip(f"transparent huge pages are {_thp_mode()} here")
    before = ox._anon_mappings()
    assert before is not None
    region = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.write(b"\x01" * len(region))  # touched, like loaded weights
    try:
        # the region existed when this snapshot was taken: left alone
        assert ox.collapse_new_mappings(ox._anon_mappings() or {}) == 0
        huge_before = _anon_huge_kib()
        done = ox.collapse_new_mappings(before)
        if done == 0:
            pytest.skip("the kernel refused MADV_COLLAPSE (older than 6.1, or no memory)")
        assert done >= 8 << 20  # 16 MiB, whatever its alignment, holds 7 huge pages
        assert _anon_huge_kib() >= huge_before + (done >> 10) // 2
        assert region[:4] == b"\x01\x01\x01\x01"  # contents kept
    finally:
        region.close()


@linux
def test_a_mostly_untouched_mapping_is_left_alone() -> None:
    """Another thread's stack or an allocator's reserve, mapped while a session loads,
    is not made resident by a collapse."""
    if _thp_mode() in ("never", "absent"):
        pytest.skip(f"transparent huge pages are {_thp_mode()} here")
    before = ox._anon_mappings()
    assert before is not None
    region = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for off in range(0, len(region), 2 << 20):  # one page touched per 2 MiB
            region[off] = 1
        assert ox.collapse_new_mappings(before) == 0
    finally:
        region.close()


def test_without_proc_maps_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert ox._anon_mappings() is None
    assert ox.collapse_new_mappings({}) == 0
