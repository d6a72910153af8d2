"""FsStore only: persistence, damaged release files, read-only opens, locking, disk full."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mesh.store.fs as fs_module
from mesh.core.trust import TrustedKey, TrustStore
from mesh.errors import IntegrityError, NotFoundError, StoreError, StoreFullError, TrustError
from mesh.ids import ChunkId
from mesh.store import FsStore
from tests.helpers import CHUNK, Published, key, pattern, release


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[FsStore]:
    with FsStore(root) as s:
        yield s


def put_all(store: FsStore, pub: Published) -> None:
    for cid, data in pub.chunks.items():
        store.put(cid, data)
    store.put_release(pub.release)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything about the tree a write could change (not atime)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def release_file(root: Path, pub: Published) -> Path:
    return root / "releases" / f"{pub.manifest.release_id.hex()}.rel"


# -- layout and persistence -------------------------------------------------------------


def test_layout(store: FsStore, root: Path) -> None:
    pub = release()
    put_all(store, pub)
    for cid, data in pub.chunks.items():
        path = root / "chunks" / cid.hex()[:2] / cid.hex()
        assert path.read_bytes() == data
    assert release_file(root, pub).read_bytes() == pub.release.encode()
    store.assemble(pub.manifest.release_id)
    assembled = root / "assembled" / pub.manifest.release_id.hex() / "model.onnx"
    assert assembled.read_bytes() == pub.files["model.onnx"]
    assert store.assembled_path(pub.manifest.release_id, "model.onnx") == assembled
    assert list((root / "tmp").iterdir()) == []
    assert (root / "lock").read_text().strip() == str(os.getpid())


def test_reopen_finds_everything(root: Path) -> None:
    a1, a2 = release(version=1), release(version=2)
    b1 = release(model="cam-b")
    with FsStore(root) as s:
        for p in (a1, a2, b1):
            put_all(s, p)
        s.assemble(a2.manifest.release_id)
        chunks = s.chunk_ids()
    with FsStore(root) as s:
        assert [(i.model, i.version, i.complete) for i in s.releases()] == [
            ("cam-a", 1, True),
            ("cam-a", 2, True),
            ("cam-b", 1, True),
        ]
        assert s.get_release(a1.manifest.release_id) == a1.release
        assert s.chunk_ids() == chunks
        assert s.is_assembled(a2.manifest.release_id)
        assert s.latest_version("cam-a") == 2
        assert s.verify_release(b1.manifest.release_id).ok
        assert s.damaged_releases() == {}
        st = s.statistics()
        assert (st.releases, st.assembled, st.chunks_written) == (3, 1, 0)
        assert st.chunks == len(chunks)


def test_stray_files_are_not_chunks(store: FsStore, root: Path) -> None:
    cid = store.add(b"real")
    (root / "chunks" / cid.hex()[:2] / "notes.txt").write_text("x")
    (root / "chunks" / cid.hex()[:2] / ("z" * 64)).write_text("x")
    (root / "chunks" / "stray").write_text("x")
    (root / "chunks" / "zz").mkdir()
    (root / "chunks" / "zz" / ("zz" + "0" * 62)).write_text("x")
    (root / "assembled" / "not-a-release").mkdir()
    (root / "assembled" / ("q" * 64)).mkdir()
    assert store.chunk_ids() == [cid]
    assert store.statistics().chunks == 1
    assert store.statistics().assembled == 0
    assert store.gc().chunks_removed == 1  # the real, unreferenced one


def test_missing_release_dir_is_an_empty_store(root: Path) -> None:
    root.mkdir()
    with FsStore(root, readonly=True) as s:
        assert s.releases() == []
        assert s.chunk_ids() == []
        assert s.statistics().chunks == 0


# -- damaged release files --------------------------------------------------------------


def test_every_flipped_manifest_byte_is_reported_not_served(root: Path) -> None:
    pub = release()
    rid = pub.manifest.release_id
    with FsStore(root) as s:
        put_all(s, pub)
    path = release_file(root, pub)
    original = path.read_bytes()
    m_bytes = pub.manifest.encode()
    start = original.index(m_bytes)
    decodable = 0
    for pos in range(start, start + len(m_bytes)):
        flipped = bytearray(original)
        flipped[pos] ^= 0x01
        path.write_bytes(bytes(flipped))
        with FsStore(root, readonly=True) as s:
            with pytest.raises(NotFoundError):
                s.get_release(rid)
            assert s.releases() == []
            damaged = s.damaged_releases()
            assert list(damaged) == [rid.hex()]
            cands = s.candidates("cam-a")
            if damaged[rid.hex()].startswith("unreadable"):
                assert cands == []
            else:
                decodable += 1
                assert "does not hash to its release id" in damaged[rid.hex()]
                assert len(cands) <= 1  # the model name itself may have been hit
                for r, why in cands:
                    assert r.manifest.release_id != rid
                    assert why is not None
                    assert rid.hex()[:12] in why
    assert decodable > 0


def test_damaged_copy_is_listed_first_by_candidates(root: Path) -> None:
    v1, v2 = release(version=1), release(version=2)
    with FsStore(root) as s:
        put_all(s, v1)
        put_all(s, v2)
    path = release_file(root, v2)
    data = bytearray(path.read_bytes())
    # change 'created' by one second: still a valid manifest, but not the one named
    m_bytes = v2.manifest.encode()
    pos = data.index(m_bytes) + m_bytes.index(b"\xa7created\xce") + len(b"\xa7created\xce") + 3
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    with FsStore(root) as s:
        assert [i.version for i in s.releases()] == [1]
        assert s.latest_version("cam-a") == 1
        cands = s.candidates("cam-a")
        assert [(r.manifest.version, why is None) for r, why in cands] == [(2, False), (1, True)]
        assert s.candidates("cam-a", 2)[0][1] is not None
        with pytest.raises(NotFoundError):
            s.get_release(v2.manifest.release_id)
        # the node re-fetches the release: the sound copy replaces the damaged file
        s.put_release(v2.release)
        assert s.get_release(v2.manifest.release_id) == v2.release
        assert s.damaged_releases() == {}
        assert [why for _, why in s.candidates("cam-a", 2)] == [None]
    with FsStore(root) as s:
        assert s.damaged_releases() == {}
        assert [i.version for i in s.releases()] == [1, 2]


def test_damaged_copy_sorts_before_the_sound_one_of_the_same_version(root: Path) -> None:
    pub = release(version=2)
    with FsStore(root) as s:
        put_all(s, pub)
    stray = root / "releases" / f"{'0' * 64}.rel"
    stray.write_bytes(release_file(root, pub).read_bytes())
    with FsStore(root) as s:
        assert list(s.damaged_releases()) == ["0" * 64]
        cands = s.candidates("cam-a", 2)
        assert [why is None for _, why in cands] == [False, True]
        assert all(r == pub.release for r, _ in cands)
        assert s.get_release(pub.manifest.release_id) == pub.release


def test_gc_removes_assembled_files_of_vanished_releases(root: Path) -> None:
    pub = release()
    rid = pub.manifest.release_id
    with FsStore(root) as s:
        put_all(s, pub)
        s.assemble(rid)
    release_file(root, pub).unlink()
    with FsStore(root) as s:
        assert s.is_assembled(rid)
        report = s.gc()
        assert not s.is_assembled(rid)
        assert report.chunks_removed == len(pub.chunks)
        assert list((root / "assembled").iterdir()) == []
        assert list((root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        lambda data: data + b"\x00",
        lambda data: b"not msgpack at all",
    ],
    ids=["empty", "truncated", "trailing", "garbage"],
)
def test_unreadable_release_files(root: Path, damage: Callable[[bytes], bytes]) -> None:
    pub = release()
    with FsStore(root) as s:
        put_all(s, pub)
    path = release_file(root, pub)
    path.write_bytes(damage(path.read_bytes()))
    with FsStore(root) as s:
        assert s.releases() == []
        why = s.damaged_releases()[pub.manifest.release_id.hex()]
        assert why.startswith("unreadable")
        assert s.candidates("cam-a") == []


def test_release_file_under_another_name(root: Path) -> None:
    a, b = release(version=1), release(version=2)
    with FsStore(root) as s:
        put_all(s, a)
    os.rename(release_file(root, a), release_file(root, b))
    with FsStore(root) as s:
        assert s.releases() == []
        assert list(s.damaged_releases()) == [b.manifest.release_id.hex()]


def test_flipped_signature_byte_is_caught_by_the_trust_check(root: Path) -> None:
    """The store names releases by their manifest; the signature is the trust store's job."""
    pub = release()
    with FsStore(root) as s:
        put_all(s, pub)
    path = release_file(root, pub)
    data = bytearray(path.read_bytes())
    sig = pub.release.signatures[0].signature
    data[data.index(sig) + len(sig) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    trust = TrustStore([TrustedKey(key().public_key)])
    with FsStore(root, readonly=True) as s:
        loaded = s.get_release(pub.manifest.release_id)
        with pytest.raises(TrustError, match="invalid"):
            trust.check_release(loaded)


# -- read-only opens --------------------------------------------------------------------


def test_readonly_never_writes(root: Path) -> None:
    pub = release()
    with FsStore(root) as s:
        put_all(s, pub)
        s.add(b"orphan")
        put_all(s, release(version=2))
    corrupt = next(iter(pub.chunks))
    path = root / "chunks" / corrupt.hex()[:2] / corrupt.hex()
    path.write_bytes(b"rotten")
    (root / "tmp" / "leftover.tmp").write_bytes(b"x")
    before = snapshot(root)
    rid = pub.manifest.release_id

    with FsStore(root, readonly=True) as s:
        # reads
        assert len(s.releases()) == 2
        assert not s.verify_release(rid).ok
        s.statistics()
        s.damaged_releases()
        s.candidates("cam-a")
        with pytest.raises(IntegrityError, match="corrupt"):
            s.get(corrupt)
        # writes are refused
        existing = s.chunk_ids()[0]
        fresh = next(
            d
            for d in (str(i).encode() for i in range(1000))
            if not (root / "chunks" / ChunkId.of(d).hex()[:2]).exists()
        )
        for attempt in (
            lambda: s.add(fresh),
            lambda: s.add(s.get(existing)),
            lambda: s.put(ChunkId.of(fresh), fresh),
            lambda: s.delete_chunk(existing),
            lambda: s.put_release(release(version=9).release),
            lambda: s.delete_release(rid),
            lambda: s.assemble(rid),
            lambda: s.gc(),
        ):
            with pytest.raises(StoreError, match="read-only"):
                attempt()
        assert len(s.releases()) == 2
    assert snapshot(root) == before


def test_readonly_takes_no_lock(store: FsStore, root: Path) -> None:
    put_all(store, release())
    with FsStore(root, readonly=True) as ro:
        assert len(ro.releases()) == 1
        with FsStore(root, readonly=True) as ro2:
            assert len(ro2.releases()) == 1


def test_readonly_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        FsStore(tmp_path / "absent", readonly=True)
    assert not (tmp_path / "absent").exists()


def test_readonly_on_an_empty_directory_refuses_writes(tmp_path: Path) -> None:
    with FsStore(tmp_path, readonly=True) as s, pytest.raises(StoreError, match="read-only"):
        s.add(b"data")
    assert list(tmp_path.iterdir()) == []


# -- one writer -------------------------------------------------------------------------


def test_second_writer_refused(store: FsStore, root: Path) -> None:
    with pytest.raises(StoreError, match="in use") as info:
        FsStore(root)
    assert str(os.getpid()) in str(info.value)
    store.add(b"still works")
    store.close()
    with FsStore(root) as again:
        assert len(again.chunk_ids()) == 1


def test_close_is_idempotent(root: Path) -> None:
    s = FsStore(root)
    s.close()
    s.close()
    FsStore(root).close()


def test_tmp_leftovers_cleaned_by_a_writer(root: Path) -> None:
    with FsStore(root) as s:
        cid = s.add(b"kept")
    tmp = root / "tmp"
    (tmp / "123.4.tmp").write_bytes(b"half a chunk")
    (tmp / "asm-deadbeef").mkdir()
    (tmp / "asm-deadbeef" / "model.onnx").write_bytes(b"half a model")
    (tmp / "del-x" / "deep").mkdir(parents=True)
    with FsStore(root, readonly=True):
        assert len(list(tmp.iterdir())) == 3  # a reader leaves them alone
    with FsStore(root) as s:
        assert list(tmp.iterdir()) == []
        assert s.chunk_ids() == [cid]
        assert s.get(cid) == b"kept"


# -- disk full --------------------------------------------------------------------------


class _FullDisk:
    """``os`` as mesh.store.fs sees it, with ``write`` failing after ``allow`` bytes."""

    def __init__(self, allow: int = 0, err: int = errno.ENOSPC) -> None:
        self.allow = allow
        self.err = err
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self.calls += 1
        if self.allow > 0:
            n = os.write(fd, bytes(data[: self.allow]))
            self.allow -= n
            return n
        raise OSError(self.err, os.strerror(self.err))


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., _FullDisk]:
    def install(allow: int = 0, err: int = errno.ENOSPC) -> _FullDisk:
        fake = _FullDisk(allow, err)
        monkeypatch.setattr(fs_module, "os", fake)
        return fake

    return install


def _state(store: FsStore, root: Path) -> tuple[Any, ...]:
    rels = sorted(p.name for p in (root / "releases").iterdir())
    chunks = {c: store.get(c) for c in store.chunk_ids()}
    return rels, chunks


@pytest.mark.parametrize("allow", [0, 1000])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_on_chunk_write(
    store: FsStore, root: Path, full_disk: Callable[..., _FullDisk], allow: int, err: int
) -> None:
    pub = release()
    put_all(store, pub)
    before = _state(store, root)
    fake = full_disk(allow, err)
    data = pattern(CHUNK, 99)
    with pytest.raises(StoreFullError, match="disk full") as info:
        store.add(data)
    assert "nothing partial" in str(info.value)
    assert fake.calls >= 1
    assert list((root / "tmp").iterdir()) == []
    assert not store.has(ChunkId.of(data))
    assert _state(store, root) == before
    assert store.verify_release(pub.manifest.release_id).ok


def test_disk_full_then_space_again(
    store: FsStore, root: Path, full_disk: Callable[..., _FullDisk], monkeypatch: pytest.MonkeyPatch
) -> None:
    full_disk()
    with pytest.raises(StoreFullError):
        store.add(b"later")
    monkeypatch.undo()
    assert store.add_new(b"later") == (ChunkId.of(b"later"), True)
    assert store.statistics().chunks_written == 1


def test_disk_full_on_release_write(
    store: FsStore, root: Path, full_disk: Callable[..., _FullDisk]
) -> None:
    old = release(version=1)
    put_all(store, old)
    new = release(version=2)
    for cid, data in new.chunks.items():
        store.put(cid, data)
    before = _state(store, root)
    full_disk(allow=10)
    with pytest.raises(StoreFullError):
        store.put_release(new.release)
    assert list((root / "tmp").iterdir()) == []
    with pytest.raises(NotFoundError):
        store.get_release(new.manifest.release_id)
    assert [i.version for i in store.releases()] == [1]
    assert _state(store, root) == before
    store.close()
    with FsStore(root, readonly=True) as again:
        assert [i.version for i in again.releases()] == [1]
        assert again.damaged_releases() == {}


def test_disk_full_while_assembling(
    store: FsStore, root: Path, full_disk: Callable[..., _FullDisk]
) -> None:
    pub = release({"a.onnx": pattern(CHUNK, 1), "b.onnx": pattern(3 * CHUNK, 2)})
    put_all(store, pub)
    rid = pub.manifest.release_id
    full_disk(allow=CHUNK + 100)  # the first file fits, the second does not
    with pytest.raises(StoreFullError, match="disk full"):
        store.assemble(rid)
    assert not store.is_assembled(rid)
    assert list((root / "tmp").iterdir()) == []
    assert list((root / "assembled").iterdir()) == []
    assert store.verify_release(rid).ok


def test_other_write_errors_are_store_errors(
    store: FsStore, root: Path, full_disk: Callable[..., _FullDisk]
) -> None:
    full_disk(err=errno.EIO)
    with pytest.raises(StoreError, match="cannot write") as info:
        store.add(b"data")
    assert not isinstance(info.value, StoreFullError)
    assert list((root / "tmp").iterdir()) == []


def test_received_page_aligned_chunks_are_verified_and_written_direct(
    store: FsStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk streams hand the store mmap-backed views (mesh.runtime.chunks.RecvBuffers):
    they are hashed once, written with O_DIRECT where the file system allows it (else
    through the page cache), and a corrupt one is refused without leaving a file."""
    import mmap

    opened: list[int] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, *args: Any) -> int:
        opened.append(flags)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", spy_open)  # the os module fs.py uses
    data = pattern(1 << 20, 3)
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    view = memoryview(buf)[: len(data)]
    assert store.put(ChunkId.of(data), view) is True
    assert store.get(ChunkId.of(data)) == data
    if fs_module._O_DIRECT:
        assert any(f & fs_module._O_DIRECT for f in opened)
    bad = bytearray(data)
    bad[7] ^= 1
    buf[:] = bytes(bad)
    with pytest.raises(IntegrityError):
        store.put(ChunkId.of(pattern(1 << 20, 4)), view)
    assert not list((root / "tmp").iterdir())
    assert not store.has(ChunkId.of(pattern(1 << 20, 4)))
