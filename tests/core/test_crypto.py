"""Publisher key files: modes, no silent overwrite, and clear errors for wrong files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mesh.crypto import MAX_KEY_FILE, PrivateKey, PublicKey
from mesh.errors import KeyFileError
from tests.helpers import key


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_save_writes_private_0600_and_public(tmp_path: Path) -> None:
    k = PrivateKey.generate()
    path = tmp_path / "sub" / "pub.key"
    pub_path = k.save(path)
    assert pub_path == tmp_path / "sub" / "pub.key.pub"
    assert _mode(path) == 0o600
    assert _mode(pub_path) == 0o644
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sorted(p.name for p in path.parent.iterdir()) == ["pub.key", "pub.key.pub"]


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_modes_regardless_of_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        PrivateKey.generate().save(tmp_path / "k")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600
    assert _mode(tmp_path / "k.pub") == 0o644


def test_load_round_trip(tmp_path: Path) -> None:
    k = PrivateKey.generate()
    pub_path = k.save(tmp_path / "k")
    loaded = PrivateKey.load(tmp_path / "k")
    assert loaded.key_id == k.key_id
    pub = PublicKey.load(pub_path)
    assert pub.key_id == k.key_id
    assert pub.verify(b"m", loaded.sign(b"m"))
    # a private key file also works where a public key is wanted
    assert PublicKey.load(tmp_path / "k").key_id == k.key_id


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = PrivateKey.generate()
    first.save(tmp_path / "k")
    before = (tmp_path / "k").read_bytes(), (tmp_path / "k.pub").read_bytes()
    with pytest.raises(KeyFileError, match=r"already exists.*--force"):
        PrivateKey.generate().save(tmp_path / "k")
    assert ((tmp_path / "k").read_bytes(), (tmp_path / "k.pub").read_bytes()) == before
    second = PrivateKey.generate()
    second.save(tmp_path / "k", force=True)
    assert PrivateKey.load(tmp_path / "k").key_id == second.key_id
    assert PublicKey.load(tmp_path / "k.pub").key_id == second.key_id
    assert _mode(tmp_path / "k") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]  # no temp files


def test_refuses_when_only_the_pub_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("someone else's")
    with pytest.raises(KeyFileError, match=r"k\.pub already exists"):
        PrivateKey.generate().save(tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "k").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileError, match="already exists"):
        PrivateKey.generate().save(tmp_path / "k")
    assert not (tmp_path / "elsewhere").exists()


def test_public_key_where_private_is_needed(tmp_path: Path) -> None:
    pub_path = PrivateKey.generate().save(tmp_path / "k")
    with pytest.raises(KeyFileError, match="public key") as info:
        PrivateKey.load(pub_path)
    assert str(pub_path) in str(info.value)


AnyPrivate = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _pem_private(k: AnyPrivate) -> bytes:
    return k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(k: AnyPrivate) -> bytes:
    return k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


OTHER_KEYS: dict[str, AnyPrivate] = {
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=1024),
}


@pytest.mark.parametrize("kind", sorted(OTHER_KEYS))
def test_non_p256_keys_refused(tmp_path: Path, kind: str) -> None:
    other = OTHER_KEYS[kind]
    (tmp_path / "k").write_bytes(_pem_private(other))
    (tmp_path / "k.pub").write_bytes(_pem_public(other))
    with pytest.raises(KeyFileError, match="P-256"):
        PrivateKey.load(tmp_path / "k")
    with pytest.raises(KeyFileError, match="P-256"):
        PublicKey.load(tmp_path / "k.pub")
    with pytest.raises(KeyFileError, match="P-256"):
        PublicKey.load(tmp_path / "k")


def test_encrypted_key_refused(tmp_path: Path) -> None:
    k = ec.generate_private_key(ec.SECP256R1())
    pem = k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "k").write_bytes(pem)
    with pytest.raises(KeyFileError, match="encrypted"):
        PrivateKey.load(tmp_path / "k")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"hello world\n", "not a PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", "not a PEM"),
        (os.urandom(300), "not a PEM"),
        (b"x" * (MAX_KEY_FILE + 1), "too large"),
    ],
)
def test_bad_private_key_files(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "k").write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        PrivateKey.load(tmp_path / "k")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"garbage", "not a PEM public key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM"),
    ],
)
def test_bad_public_key_files(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "k.pub").write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        PublicKey.load(tmp_path / "k.pub")


def test_directory_and_missing_file(tmp_path: Path) -> None:
    for load in (PrivateKey.load, PublicKey.load):
        with pytest.raises(KeyFileError, match="directory"):
            load(tmp_path)
        with pytest.raises(KeyFileError, match="does not exist"):
            load(tmp_path / "missing")
        with pytest.raises(KeyFileError):
            load(tmp_path / "missing" / "deeper")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    key(0).save(tmp_path / "k")
    (tmp_path / "k").chmod(0)
    with pytest.raises(KeyFileError, match="permission"):
        PrivateKey.load(tmp_path / "k")


def test_save_into_a_file_as_directory_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(KeyFileError, match="cannot create"):
        PrivateKey.generate().save(tmp_path / "file" / "k")


def test_from_pem_names_the_source() -> None:
    with pytest.raises(KeyFileError, match="my-source"):
        PrivateKey.from_pem(b"junk", "my-source")
    with pytest.raises(KeyFileError, match="my-source"):
        PublicKey.from_pem(b"junk", "my-source")


def test_public_key_pem_round_trip() -> None:
    pub = key(0).public_key
    again = PublicKey.from_pem(pub.to_pem())
    assert again.key_id == pub.key_id
    assert again.verify(b"m", key(0).sign(b"m"))
