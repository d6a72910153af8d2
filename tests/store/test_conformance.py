"""The ChunkStore conformance suite, run against both MemoryStore and FsStore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.core.trust import SignedRelease
from mesh.errors import (
    IntegrityError,
    LocalProtocolError,
    NotFoundError,
    VersionError,
)
from mesh.ids import ChunkId, ReleaseId
from mesh.store import FsStore, MemoryStore
from mesh.store.base import MIN_KEEP, ChunkStore
from tests.helpers import CHUNK, Published, key, manifest, pattern, release

AnyStore = MemoryStore | FsStore


@pytest.fixture(params=["memory", "fs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    s: AnyStore = MemoryStore() if request.param == "memory" else FsStore(tmp_path / "store")
    try:
        yield s
    finally:
        s.close()


def put_all(store: ChunkStore, pub: Published) -> ReleaseId:
    for cid, data in pub.chunks.items():
        store.put(cid, data)
    return store.put_release(pub.release)


def no_tmp_leftovers(store: AnyStore) -> None:
    if isinstance(store, FsStore):
        assert list((store.root / "tmp").iterdir()) == []


def test_is_a_chunk_store(store: AnyStore) -> None:
    s: ChunkStore = store  # mypy checks the protocol
    assert s.statistics().chunks == 0


# -- chunks -----------------------------------------------------------------------------


def test_add_get_has_present(store: AnyStore) -> None:
    a, b = b"alpha" * 100, b"beta"
    cid = store.add(a)
    assert cid == ChunkId.of(a)
    assert store.has(cid)
    assert store.get(cid) == a
    other = ChunkId.of(b)
    assert not store.has(other)
    assert store.present([cid, other, cid]) == {cid}
    assert store.add_new(a) == (cid, False)
    assert store.add_new(b) == (other, True)
    assert store.chunk_ids() == sorted([cid, other])


def test_add_accepts_bytearray_and_memoryview(store: AnyStore) -> None:
    cid = store.add(bytearray(b"x" * 10))
    assert store.get(cid) == b"x" * 10
    assert type(store.get(cid)) is bytes
    cid2 = store.add(memoryview(b"y" * 10))
    assert store.get(cid2) == b"y" * 10


def test_empty_chunk(store: AnyStore) -> None:
    cid = store.add(b"")
    assert store.get(cid) == b""


def test_put_checks_the_hash(store: AnyStore) -> None:
    data = b"payload"
    assert store.put(ChunkId.of(data), data) is True
    assert store.put(ChunkId.of(data), data) is False
    wrong = ChunkId.of(b"something else")
    with pytest.raises(IntegrityError, match=wrong.short()):
        store.put(wrong, data)
    assert not store.has(wrong)
    assert store.chunk_ids() == [ChunkId.of(data)]
    no_tmp_leftovers(store)


def test_put_with_wrong_hash_stores_nothing(store: AnyStore) -> None:
    with pytest.raises(IntegrityError):
        store.put(ChunkId.of(b"a"), b"b")
    assert store.chunk_ids() == []
    assert not store.has(ChunkId.of(b"a"))
    assert not store.has(ChunkId.of(b"b"))
    assert store.statistics().chunks == 0
    no_tmp_leftovers(store)


def test_oversize_and_non_bytes_refused(store: AnyStore) -> None:
    with pytest.raises(LocalProtocolError, match="exceeds"):
        store.add(b"\x00" * (16 * 1024 * 1024 + 1))
    with pytest.raises(LocalProtocolError, match="bytes"):
        store.add("text")  # type: ignore[arg-type]
    assert store.chunk_ids() == []


def test_get_missing(store: AnyStore) -> None:
    with pytest.raises(NotFoundError):
        store.get(ChunkId.of(b"nope"))


def test_get_corrupt_chunk(store: AnyStore) -> None:
    cid = store.add(b"x" * 1000)
    store.corrupt(cid, 500)
    with pytest.raises(IntegrityError, match=cid.short()):
        store.get(cid)
    assert store.has(cid)  # still there: verify_release / gc decide what to do


def test_get_truncated_chunk(store: AnyStore) -> None:
    cid = store.add(b"x" * 1000)
    store.truncate(cid, 999)
    with pytest.raises(IntegrityError):
        store.get(cid)
    store.truncate(cid, 0)
    with pytest.raises(IntegrityError):
        store.get(cid)


def test_get_into_reads_a_verified_chunk_into_a_buffer_of_its_size(store: AnyStore) -> None:
    data = bytes(range(256)) * 40
    cid = store.add(data)
    buf = bytearray(len(data) + 8)
    store.get_into(cid, memoryview(buf)[4 : 4 + len(data)])
    assert buf[4 : 4 + len(data)] == data
    assert buf[:4] == buf[-4:] == bytes(4)  # nothing written outside the view
    with pytest.raises(IntegrityError):  # the manifest's size is not the file's
        store.get_into(cid, memoryview(bytearray(len(data) - 1)))
    with pytest.raises(IntegrityError):
        store.get_into(cid, memoryview(bytearray(len(data) + 1)))
    with pytest.raises(NotFoundError):
        store.get_into(ChunkId.of(b"nope"), memoryview(bytearray(4)))


def test_get_into_refuses_a_corrupt_chunk(store: AnyStore) -> None:
    cid = store.add(b"x" * 1000)
    store.corrupt(cid, 500)
    with pytest.raises(IntegrityError, match=cid.short()):
        store.get_into(cid, memoryview(bytearray(1000)))
    assert store.statistics().integrity_failures == 1


def test_delete_chunk(store: AnyStore) -> None:
    cid = store.add(b"z" * 123)
    assert store.delete_chunk(cid) == 123
    assert not store.has(cid)
    assert store.delete_chunk(cid) == 0
    with pytest.raises(NotFoundError):
        store.get(cid)
    assert store.add_new(b"z" * 123) == (cid, True)


# -- releases ---------------------------------------------------------------------------


def test_put_and_get_release(store: AnyStore) -> None:
    pub = release()
    rid = store.put_release(pub.release)
    assert rid == pub.manifest.release_id
    got = store.get_release(rid)
    assert got == pub.release
    assert got.encode() == pub.release.encode()
    assert store.put_release(pub.release) == rid  # idempotent
    assert store.find_release("cam-a") == pub.release
    assert store.find_release("cam-a", 1) == pub.release
    assert store.latest_version("cam-a") == 1
    assert store.latest_version("other") is None


def test_missing_release(store: AnyStore) -> None:
    rid = ReleaseId.of(b"none")
    with pytest.raises(NotFoundError, match=rid.short()):
        store.get_release(rid)
    with pytest.raises(NotFoundError):
        store.release_info(rid)
    with pytest.raises(NotFoundError):
        store.verify_release(rid)
    with pytest.raises(NotFoundError):
        store.assemble(rid)
    with pytest.raises(NotFoundError):
        store.delete_release(rid)
    with pytest.raises(NotFoundError, match="no release of model"):
        store.find_release("cam-a")


def test_find_release_lists_what_exists(store: AnyStore) -> None:
    store.put_release(release(version=1).release)
    store.put_release(release(version=3).release)
    assert store.find_release("cam-a").manifest.version == 3
    with pytest.raises(NotFoundError, match=r"no version 2 \(have: 1, 3\)"):
        store.find_release("cam-a", 2)


def test_same_model_and_version_twice(store: AnyStore) -> None:
    first = release(version=4)
    store.put_release(first.release)
    again = release({"model.onnx": b"different"}, version=4)
    assert again.manifest.release_id != first.manifest.release_id
    with pytest.raises(VersionError, match=r"cam-a v4 already exists"):
        store.put_release(again.release)
    assert [i.release_id for i in store.releases()] == [first.manifest.release_id]
    # another model may use the same version
    store.put_release(release(model="cam-b", version=4).release)


def test_release_info_counts_present_chunks(store: AnyStore) -> None:
    data = pattern(3 * CHUNK + 1, 9)
    pub = release({"model.onnx": data})
    rid = store.put_release(pub.release)  # manifest first, chunks later
    info = store.release_info(rid)
    assert (info.chunks_total, info.chunks_present, info.complete) == (4, 0, False)
    assert (info.model, info.version, info.size, info.assembled) == ("cam-a", 1, len(data), False)
    store.add(data[:CHUNK])
    store.add(data[3 * CHUNK :])
    assert store.release_info(rid).chunks_present == 2
    for cid, chunk in pub.chunks.items():
        store.put(cid, chunk)
    assert store.release_info(rid).complete


def test_release_info_counts_shared_chunks_per_reference(store: AnyStore) -> None:
    block = pattern(CHUNK, 1)
    pub = release({"a.onnx": block + block, "b.bin": block})
    rid = put_all(store, pub)
    info = store.release_info(rid)
    assert (info.chunks_total, info.chunks_present) == (3, 3)
    assert store.statistics().chunks == 1


def test_releases_listing(store: AnyStore) -> None:
    b2 = release(model="cam-b", version=2)
    a1 = release(model="cam-a", version=1)
    a2 = release(model="cam-a", version=2)
    for p in (b2, a2, a1):
        put_all(store, p)
    assert [(i.model, i.version) for i in store.releases()] == [
        ("cam-a", 1),
        ("cam-a", 2),
        ("cam-b", 2),
    ]
    assert [i.version for i in store.releases("cam-a")] == [1, 2]
    assert store.releases("none") == []
    assert all(i.complete for i in store.releases())


def test_delete_release_keeps_chunks(store: AnyStore) -> None:
    pub = release()
    rid = put_all(store, pub)
    store.assemble(rid)
    store.delete_release(rid)
    with pytest.raises(NotFoundError):
        store.get_release(rid)
    assert not store.is_assembled(rid)
    assert store.present(pub.chunks) == set(pub.chunks)
    store.put_release(pub.release)  # can come back
    assert store.release_info(rid).complete


def test_damaged_releases_empty_when_healthy(store: AnyStore) -> None:
    put_all(store, release())
    assert store.damaged_releases() == {}
    cands = store.candidates("cam-a")
    assert [(r.manifest.version, why) for r, why in cands] == [(1, None)]


def test_candidates_newest_first_and_filtered(store: AnyStore) -> None:
    for v in (1, 3, 2):
        store.put_release(release(version=v).release)
    assert [r.manifest.version for r, _ in store.candidates("cam-a")] == [3, 2, 1]
    assert [r.manifest.version for r, _ in store.candidates("cam-a", 2)] == [2]
    assert store.candidates("cam-b") == []


# -- verification -----------------------------------------------------------------------


def test_verify_release_reports_bad_chunks(store: AnyStore) -> None:
    a = pattern(3 * CHUNK, 1)
    b = pattern(2 * CHUNK + 10, 2)
    pub = release({"model.onnx": a, "model.onnx.data": b})
    rid = put_all(store, pub)
    report = store.verify_release(rid)
    assert report.ok
    assert report.bad == ()
    assert (report.chunks_total, report.chunks_verified) == (6, 6)
    assert (report.model, report.version, report.release_id) == ("cam-a", 1, rid)

    c_corrupt = ChunkId.of(a[CHUNK : 2 * CHUNK])  # index 1, in model.onnx
    c_trunc = ChunkId.of(b[CHUNK : 2 * CHUNK])  # index 4, in model.onnx.data
    c_missing = ChunkId.of(b[2 * CHUNK :])  # index 5
    store.corrupt(c_corrupt, 17)
    store.truncate(c_trunc, 100)
    store.delete_chunk(c_missing)
    report = store.verify_release(rid)
    assert not report.ok
    assert report.chunks_verified == 3
    got = [(x.index, x.path, x.chunk_id, x.reason.split(":")[0]) for x in report.bad]
    assert got == [
        (1, "model.onnx", c_corrupt, "content does not match hash"),
        (4, "model.onnx.data", c_trunc, "truncated"),
        (5, "model.onnx.data", c_missing, "missing"),
    ]
    assert report.bad[1].reason == f"truncated: 100 of {CHUNK} bytes"
    assert "chunk #4" in report.bad[1].describe()
    assert "model.onnx.data" in report.bad[1].describe()


def test_verify_release_with_no_chunks_yet(store: AnyStore) -> None:
    pub = release()
    rid = store.put_release(pub.release)
    report = store.verify_release(rid)
    assert report.chunks_verified == 0
    assert {b.reason for b in report.bad} == {"missing"}
    assert store.statistics().integrity_failures == 0  # missing is not corruption


# -- assembly ---------------------------------------------------------------------------


def _read_assembled(store: AnyStore, rid: ReleaseId, path: str) -> bytes:
    with store.open_assembled(rid, path) as f:
        return f.read()


def test_assemble_gives_the_original_bytes(store: AnyStore) -> None:
    files = {
        "model.onnx": pattern(2 * CHUNK + 3, 1),
        "data/weights.bin": pattern(CHUNK, 2),
        "empty.txt": b"",
    }
    pub = release(files)
    rid = put_all(store, pub)
    assert not store.is_assembled(rid)
    store.assemble(rid)
    assert store.is_assembled(rid)
    assert store.release_info(rid).assembled
    for path, data in files.items():
        assert _read_assembled(store, rid, path) == data
    with pytest.raises(NotFoundError, match="no assembled file"):
        store.open_assembled(rid, "other.onnx")
    store.assemble(rid)  # already assembled: a no-op
    assert store.statistics().assembled == 1
    no_tmp_leftovers(store)


def test_assemble_refuses_a_corrupt_chunk_and_leaves_nothing(store: AnyStore) -> None:
    data = pattern(3 * CHUNK, 4)
    pub = release({"a.onnx": pattern(CHUNK, 3), "b.onnx": data})
    rid = put_all(store, pub)
    bad = ChunkId.of(data[2 * CHUNK :])
    store.corrupt(bad, 5)
    with pytest.raises(IntegrityError, match=bad.short()):
        store.assemble(rid)
    assert not store.is_assembled(rid)
    assert not store.release_info(rid).assembled
    with pytest.raises(NotFoundError):
        store.open_assembled(rid, "a.onnx")
    assert store.statistics().assembled == 0
    no_tmp_leftovers(store)


def test_assemble_refuses_a_truncated_chunk(store: AnyStore) -> None:
    data = pattern(2 * CHUNK, 5)
    pub = release({"m.onnx": data})
    rid = put_all(store, pub)
    store.truncate(ChunkId.of(data[:CHUNK]), CHUNK - 1)
    with pytest.raises(IntegrityError):
        store.assemble(rid)
    assert not store.is_assembled(rid)
    no_tmp_leftovers(store)


def test_assemble_with_a_missing_chunk(store: AnyStore) -> None:
    data = pattern(2 * CHUNK, 6)
    pub = release({"m.onnx": data})
    rid = put_all(store, pub)
    store.delete_chunk(ChunkId.of(data[CHUNK:]))
    with pytest.raises(NotFoundError):
        store.assemble(rid)
    assert not store.is_assembled(rid)
    no_tmp_leftovers(store)


def test_assemble_checks_the_whole_file_hash(store: AnyStore) -> None:
    """Chunks that each verify but whose concatenation is not the signed file."""
    data = pattern(CHUNK + 1, 7)
    m = manifest({"m.onnx": data})
    entry = m.files[0]
    lying = type(entry)(entry.path, entry.size, b"\x00" * 32, entry.chunks)
    forged = type(m)(m.mesh, m.model, m.version, m.created, m.chunk_size, (lying,), m.interface)
    signed = SignedRelease.create(forged, [key()])
    rid = store.put_release(signed)
    store.add(data[:CHUNK])
    store.add(data[CHUNK:])
    with pytest.raises(IntegrityError, match="whole-file hash"):
        store.assemble(rid)
    assert not store.is_assembled(rid)
    no_tmp_leftovers(store)


# -- garbage collection -----------------------------------------------------------------


def test_gc_keeps_newest_two_and_pinned(store: AnyStore) -> None:
    shared = pattern(CHUNK, 100)
    a1 = release({"m.onnx": shared + pattern(10, 1)}, version=1)
    a2 = release({"m.onnx": pattern(CHUNK + 10, 2)}, version=2)
    a3 = release({"m.onnx": pattern(CHUNK + 10, 3)}, version=3)
    a4 = release({"m.onnx": shared + pattern(10, 4)}, version=4)  # shares a chunk with a1
    b1 = release({"m.onnx": pattern(CHUNK + 10, 5)}, model="cam-b", version=1)
    c1 = release({"m.onnx": pattern(10, 6)}, model="cam-c", version=1)
    c2 = release({"m.onnx": pattern(10, 7)}, model="cam-c", version=2)
    c5 = release({"m.onnx": pattern(10, 8)}, model="cam-c", version=5)
    for p in (a1, a2, a3, a4, b1, c1, c2, c5):
        put_all(store, p)
    orphan = store.add(b"referenced by nothing")
    store.assemble(a1.manifest.release_id)
    store.assemble(a4.manifest.release_id)
    before = store.statistics()

    report = store.gc(pinned=[c1.manifest.release_id])

    kept = {(i.model, i.version) for i in store.releases()}
    assert kept == {
        ("cam-a", 4),
        ("cam-a", 3),
        ("cam-b", 1),
        ("cam-c", 5),
        ("cam-c", 2),
        ("cam-c", 1),
    }
    assert set(report.releases_removed) == {a1.manifest.release_id, a2.manifest.release_id}
    # a1's and a2's own chunks and the orphan go; the chunk a1 shared with a4 stays
    gone = {ChunkId.of(pattern(10, 1)), *a2.chunks, orphan}
    assert report.chunks_removed == len(gone) == 4
    assert report.bytes_freed == 10 + (CHUNK + 10) + len(b"referenced by nothing")
    assert store.present(gone) == set()
    assert store.has(ChunkId.of(shared))
    for p in (a3, a4, b1, c1, c2, c5):
        assert store.verify_release(p.manifest.release_id).ok
    assert not store.is_assembled(a1.manifest.release_id)
    assert store.is_assembled(a4.manifest.release_id)
    after = store.statistics()
    assert after.chunks == before.chunks - 4
    assert after.releases == before.releases - 2
    assert after.assembled == 1
    # a second run has nothing left to do
    again = store.gc(pinned=[c1.manifest.release_id])
    assert (again.releases_removed, again.chunks_removed, again.bytes_freed) == ((), 0, 0)
    no_tmp_leftovers(store)


def test_gc_keep_more(store: AnyStore) -> None:
    for v in (1, 2, 3, 4):
        put_all(store, release(version=v))
    report = store.gc(keep=3)
    assert len(report.releases_removed) == 1
    assert [i.version for i in store.releases()] == [2, 3, 4]


def test_gc_refuses_to_keep_fewer_than_two(store: AnyStore) -> None:
    put_all(store, release(version=1))
    with pytest.raises(LocalProtocolError, match="at least 2"):
        store.gc(keep=MIN_KEEP - 1)
    assert len(store.releases()) == 1


def test_gc_keeps_chunks_of_releases_still_being_fetched(store: AnyStore) -> None:
    pub = release({"m.onnx": pattern(3 * CHUNK, 1)})
    rid = store.put_release(pub.release)
    first = next(iter(pub.chunks))
    store.put(first, pub.chunks[first])
    report = store.gc()
    assert report.chunks_removed == 0
    assert store.has(first)
    assert store.release_info(rid).chunks_present == 1


# -- statistics -------------------------------------------------------------------------


def test_statistics_counters(store: AnyStore) -> None:
    s = store.statistics()
    assert (s.chunks, s.chunk_bytes, s.releases, s.assembled) == (0, 0, 0, 0)
    assert (s.chunks_written, s.chunks_deduplicated, s.chunks_read) == (0, 0, 0)
    assert (s.bytes_written, s.bytes_read, s.integrity_failures) == (0, 0, 0)

    a = store.add(b"a" * 10)
    store.add(b"b" * 20)
    store.add(b"a" * 10)  # dedup
    store.put(a, b"a" * 10)  # dedup
    store.get(a)
    store.get(a)
    with pytest.raises(IntegrityError):
        store.put(a, b"not a")
    s = store.statistics()
    assert (s.chunks, s.chunk_bytes) == (2, 30)
    assert (s.chunks_written, s.bytes_written) == (2, 30)
    assert s.chunks_deduplicated == 2
    assert (s.chunks_read, s.bytes_read) == (2, 20)
    assert s.integrity_failures == 1

    store.corrupt(a, 0)
    with pytest.raises(IntegrityError):
        store.get(a)
    s = store.statistics()
    assert s.integrity_failures == 2
    assert s.chunks_read == 2  # a failed read is not counted as served

    pub = release()
    rid = put_all(store, pub)
    store.assemble(rid)
    s = store.statistics()
    assert (s.releases, s.assembled) == (1, 1)
    assert s.chunks == 2 + len(pub.chunks)


def test_verify_counts_integrity_failures(store: AnyStore) -> None:
    pub = release()
    rid = put_all(store, pub)
    first, second = list(pub.chunks)[:2]
    store.corrupt(first)
    store.truncate(second, 1)
    store.verify_release(rid)
    assert store.statistics().integrity_failures == 2


def test_storing_good_bytes_repairs_a_damaged_chunk(store: AnyStore) -> None:
    data = b"r" * 5000
    cid = store.add(data)
    store.corrupt(cid, 10)
    with pytest.raises(IntegrityError):
        store.get(cid)
    assert store.put(cid, data) is True  # re-fetched from a peer: the copy is replaced
    assert store.get(cid) == data
    assert store.add_new(data) == (cid, False)  # intact now: a plain duplicate
