"""End to end: keygen, publish and verify as real processes, good and bad inputs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mesh.modelgen import write_example_model
from mesh.store.fs import FsStore
from tests.cli.conftest import Run


def _releases(run: Run, data: Path) -> list[tuple[str, int]]:
    out = run("releases", "--data-dir", data, "--json", check=True).json()
    return [(r["model"], r["version"]) for r in out["releases"]]


def test_keygen_writes_private_0600_and_public(run: Run, tmp_path: Path) -> None:
    res = run("keygen", "--out", tmp_path / "k.key", "--json", check=True)
    info = res.json()
    assert len(info["key_id"]) == 64
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert (tmp_path / "k.key.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_keygen_refuses_to_overwrite_without_force(run: Run, tmp_path: Path) -> None:
    run("keygen", "--out", tmp_path / "k.key", check=True)
    before = (tmp_path / "k.key").read_bytes()
    res = run("keygen", "--out", tmp_path / "k.key")
    assert res.returncode == 1
    assert "already exists" in res.error_line
    assert "--force" in res.error_line
    assert (tmp_path / "k.key").read_bytes() == before
    run("keygen", "--out", tmp_path / "k.key", "--force", check=True)
    assert (tmp_path / "k.key").read_bytes() != before


def test_publish_then_verify_round(run: Run, model: Path, key: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    pub = run(
        "publish",
        model,
        "--model",
        "cam",
        "--version",
        "3",
        "--key",
        key,
        "--data-dir",
        data,
        "--chunk-size",
        "65536",
        "--json",
        check=True,
    ).json()
    assert pub["version"] == 3
    assert pub["chunks_total"] == pub["chunks_new"] > 1
    assert pub["load_checked"] is True
    assert pub["inputs"] == ["x: float32[batch,256]"]
    ver = run(
        "verify",
        "--model",
        "cam",
        "--data-dir",
        data,
        "--trust",
        f"{key}.pub",
        "--json",
        check=True,
    ).json()
    assert ver["ok"] is True
    assert ver["release_id"] == pub["release_id"]
    assert ver["chunks_verified"] == ver["chunks_total"] == pub["chunks_total"]
    # publish records the publisher key in the data dir's trust store: no --trust needed
    assert run("verify", "--model", "cam", "--data-dir", data, "--json").json()["ok"]


def test_default_data_dir_is_edgemesh_home(run: Run, model: Path, key: Path, home: Path) -> None:
    run("publish", model, "--model", "m", "--version", "1", "--key", key, check=True)
    assert (home / "store" / "releases").is_dir()
    assert run("verify", "--model", "m", check=True).returncode == 0


@pytest.fixture
def published(run: Run, model: Path, key: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    run(
        "publish",
        model,
        "--model",
        "cam",
        "--version",
        "1",
        "--key",
        key,
        "--data-dir",
        data,
        "--chunk-size",
        "65536",
        check=True,
    )
    return data


def _assert_unchanged(run: Run, data: Path) -> None:
    assert _releases(run, data) == [("cam", 1)]
    assert run("verify", "--model", "cam", "--data-dir", data).returncode == 0


def test_publish_missing_file(run: Run, key: Path, published: Path) -> None:
    res = run(
        "publish",
        "nope.onnx",
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "does not exist" in res.error_line
    _assert_unchanged(run, published)


def test_publish_empty_file(run: Run, key: Path, published: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    res = run(
        "publish",
        "empty.onnx",
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "is empty" in res.error_line
    _assert_unchanged(run, published)


@pytest.mark.parametrize(
    "content",
    [b"hello, I am a text file\n", b"\x08\x07" + b"\xff" * 64, b"PK\x03\x04zipzipzip"],
    ids=["text", "garbage", "zip"],
)
def test_publish_not_onnx(
    run: Run, key: Path, published: Path, tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "bad.onnx").write_bytes(content)
    res = run(
        "publish",
        "bad.onnx",
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "not a valid ONNX model" in res.error_line
    _assert_unchanged(run, published)


def test_publish_truncated_onnx(
    run: Run, key: Path, published: Path, model: Path, tmp_path: Path
) -> None:
    (tmp_path / "cut.onnx").write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    res = run(
        "publish",
        "cut.onnx",
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "ONNX" in res.error_line
    _assert_unchanged(run, published)


def test_publish_model_onnxruntime_rejects(
    run: Run, key: Path, published: Path, tmp_path: Path
) -> None:
    # structurally a model, but the operator does not exist: only onnxruntime can tell
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "op.onnx"))
    res = run(
        "publish",
        "op.onnx",
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "onnxruntime cannot load" in res.error_line
    _assert_unchanged(run, published)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text(""), "is empty"),
        (lambda p: p.write_text("not a key at all\n"), "not a PEM private key"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["missing", "empty", "garbage", "directory"],
)
def test_publish_bad_key_file(
    run: Run, model: Path, published: Path, tmp_path: Path, setup: object, message: str
) -> None:
    bad = tmp_path / "bad.key"
    setup(bad)  # type: ignore[operator]
    res = run(
        "publish", model, "--model", "cam", "--version", "2", "--key", bad, "--data-dir", published
    )
    assert res.returncode == 1
    assert message in res.error_line
    _assert_unchanged(run, published)


def test_publish_unreadable_key(
    model: Path, key: Path, published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from mesh.cli import main

    key.chmod(0)
    if os.geteuid() == 0:
        # root reads any file: drop to "nobody" for the duration of the command
        os.seteuid(65534)
    try:
        code = main(
            [
                "publish",
                str(model),
                "--model",
                "cam",
                "--version",
                "2",
                "--key",
                str(key),
                "--data-dir",
                str(published),
            ]
        )
    finally:
        if os.getuid() == 0:
            os.seteuid(0)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "not readable (permission denied)" in err
    assert "\n" not in err


def test_publish_with_public_key_is_refused(
    run: Run, model: Path, key: Path, published: Path
) -> None:
    res = run(
        "publish",
        model,
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        f"{key}.pub",
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "is a public key" in res.error_line
    assert "private key" in res.error_line
    _assert_unchanged(run, published)


def test_publish_wrong_curve_key_is_refused(
    run: Run, model: Path, published: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ed.key").write_bytes(pem)
    res = run(
        "publish",
        model,
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        "ed.key",
        "--data-dir",
        published,
    )
    assert res.returncode == 1
    assert "not an ECDSA P-256 key" in res.error_line
    _assert_unchanged(run, published)


@pytest.mark.parametrize("version", ["1", "0"])
def test_publish_version_not_newer(
    run: Run, model: Path, key: Path, published: Path, version: str
) -> None:
    res = run(
        "publish",
        model,
        "--model",
        "cam",
        "--version",
        version,
        "--key",
        key,
        "--data-dir",
        published,
    )
    assert res.returncode in (1, 2)
    assert res.error_line
    _assert_unchanged(run, published)


def test_publish_usage_error_is_one_line(run: Run, model: Path) -> None:
    res = run("publish", model, "--version", "1")
    assert res.returncode == 2
    assert "Missing option '--model'" in res.error_line


def test_publish_bad_model_name(run: Run, model: Path, key: Path) -> None:
    res = run("publish", model, "--model", "Bad Name!", "--version", "1", "--key", key)
    assert res.returncode == 1
    assert "model name" in res.error_line


def _first_chunk(data: Path) -> Path:
    with FsStore(data / "store", readonly=True) as store:
        m = store.find_release("cam").manifest
        cid = m.files[0].chunks[1]
    return data / "store" / "chunks" / cid.hex()[:2] / cid.hex()


def test_verify_names_flipped_chunk_and_release(run: Run, published: Path) -> None:
    chunk = _first_chunk(published)
    raw = bytearray(chunk.read_bytes())
    raw[1000] ^= 0x40
    chunk.write_bytes(bytes(raw))
    res = run("verify", "--model", "cam", "--data-dir", published, "--json")
    assert res.returncode == 1
    line = res.error_line
    assert "chunk #1" in line
    assert chunk.name[:12] in line
    assert "cam v1" in line
    report = res.json()
    assert report["ok"] is False
    assert report["bad_chunks"] == [
        {
            "index": 1,
            "path": "model.onnx",
            "chunk_id": chunk.name,
            "reason": "content does not match hash",
        }
    ]


def test_verify_reports_truncated_chunk(run: Run, published: Path) -> None:
    chunk = _first_chunk(published)
    chunk.write_bytes(chunk.read_bytes()[:1000])
    res = run("verify", "--model", "cam", "--data-dir", published)
    assert res.returncode == 1
    assert "truncated: 1000 of 65536 bytes" in res.error_line


def test_verify_reports_missing_chunk(run: Run, published: Path) -> None:
    _first_chunk(published).unlink()
    res = run("verify", "--model", "cam", "--data-dir", published)
    assert res.returncode == 1
    assert "missing" in res.error_line


def test_verify_manifest_with_flipped_byte_fails_signature(run: Run, published: Path) -> None:
    rel = next((published / "store" / "releases").glob("*.rel"))
    raw = bytearray(rel.read_bytes())
    # flip a byte inside a chunk hash of the manifest: still decodes, content changed
    with FsStore(published / "store", readonly=True) as store:
        cid = store.find_release("cam").manifest.files[0].chunks[0].raw
    at = bytes(raw).index(cid) + 5
    raw[at] ^= 0x01
    rel.write_bytes(bytes(raw))
    res = run("verify", "--model", "cam", "--data-dir", published, "--json")
    assert res.returncode == 1
    assert "signature" in res.error_line
    assert "invalid" in res.error_line
    assert "does not hash to its release id" in res.error_line
    assert res.json()["ok"] is False


def test_verify_manifest_damaged_beyond_decoding(run: Run, published: Path) -> None:
    rel = next((published / "store" / "releases").glob("*.rel"))
    rel.write_bytes(rel.read_bytes()[:40])
    res = run("verify", "--model", "cam", "--data-dir", published)
    assert res.returncode == 1
    assert "no release of model 'cam'" in res.error_line
    listing = run("releases", "--data-dir", published, "--json", check=True).json()
    assert rel.stem in listing["damaged"]


def test_verify_untrusted_key(run: Run, published: Path, tmp_path: Path) -> None:
    run("keygen", "--out", tmp_path / "other.key", check=True)
    res = run(
        "verify", "--model", "cam", "--data-dir", published, "--trust", tmp_path / "other.key.pub"
    )
    assert res.returncode == 1
    assert "not in the trust store" in res.error_line


def test_verify_trusted_key_outside_pattern(run: Run, published: Path, key: Path) -> None:
    res = run("verify", "--model", "cam", "--data-dir", published, "--trust", f"{key}.pub:door-*")
    assert res.returncode == 1
    assert "trusted only for models door-*" in res.error_line
    ok = run("verify", "--model", "cam", "--data-dir", published, "--trust", f"{key}.pub:ca*")
    assert ok.returncode == 0


def test_trust_store_commands(run: Run, published: Path, key: Path, tmp_path: Path) -> None:
    run("keygen", "--out", tmp_path / "b.key", check=True)
    data = tmp_path / "node"
    run("trust", "add", f"{key}.pub", "--models", "door-*", "--data-dir", data, check=True)
    keys = run("trust", "list", "--data-dir", data, "--json", check=True).json()["keys"]
    assert [k["models"] for k in keys] == [["door-*"]]
    removed = run("trust", "remove", keys[0]["key_id"][:10], "--data-dir", data, check=True)
    assert keys[0]["key_id"] in removed.stdout
    assert run("trust", "list", "--data-dir", data, "--json").json()["keys"] == []


def test_verify_unknown_model_and_version(run: Run, published: Path) -> None:
    res = run("verify", "--model", "nope", "--data-dir", published)
    assert res.returncode == 1
    assert "no release of model 'nope'" in res.error_line
    res = run("verify", "--model", "cam", "--version", "7", "--data-dir", published)
    assert res.returncode == 1
    assert "has no version 7 (have: 1)" in res.error_line


def test_verify_without_store(run: Run, tmp_path: Path) -> None:
    res = run("verify", "--model", "cam", "--data-dir", tmp_path / "empty")
    assert res.returncode == 1
    assert "no store at" in res.error_line


def test_new_version_shares_unchanged_chunks(
    run: Run, key: Path, published: Path, model: Path
) -> None:
    # same bytes as v1 -> every chunk is reused, nothing new is stored
    res = run(
        "publish",
        model,
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        published,
        "--chunk-size",
        "65536",
        "--json",
        check=True,
    ).json()
    assert res["chunks_new"] == 0
    assert res["chunks_reused"] == res["chunks_total"]


def test_gc_keeps_current_and_previous(run: Run, key: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for v in (1, 2, 3):
        write_example_model(tmp_path / f"m{v}.onnx", size_bytes=128 * 1024, seed=v)
        run(
            "publish",
            tmp_path / f"m{v}.onnx",
            "--model",
            "cam",
            "--version",
            str(v),
            "--key",
            key,
            "--data-dir",
            data,
            check=True,
        )
    out = run("gc", "--data-dir", data, "--json", check=True).json()
    assert len(out["releases_removed"]) == 1
    assert out["chunks_removed"] >= 1
    assert _releases(run, data) == [("cam", 2), ("cam", 3)]
    assert run("verify", "--model", "cam", "--version", "2", "--data-dir", data).returncode == 0
