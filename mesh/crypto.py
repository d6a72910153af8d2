"""Publisher keys: ECDSA P-256 with ``cryptography``.

What it owns: generating, saving and loading publisher key files, key ids, and the
:class:`~mesh.core.trust.Signer` / :class:`~mesh.core.trust.Verifier` implementations.

Rules:
* Private keys are PKCS#8 PEM files created with mode 0600 (``O_EXCL``: never
  overwritten unless ``force``); public keys are SubjectPublicKeyInfo PEM files.
* Key id = SHA-256 of the public key's SubjectPublicKeyInfo DER encoding.
* Signatures are DER-encoded ECDSA over SHA-256 -- the form OpenSSF model-signing
  bundles carry, so releases can be exported there later.
* ``cryptography`` exceptions never leave this module: they become
  :class:`~mesh.errors.KeyFileError` with a one-line reason.

Non-goals: passphrase-protected keys, hardware tokens.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.errors import KeyFileError
from mesh.ids import KeyId

#: RFC 6979 deterministic nonces: no dependence on the device's RNG at signing time
#: (a repeated nonce leaks the private key), and reproducible signatures.
_ALGO = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
PUB_SUFFIX = ".pub"
MAX_KEY_FILE = 64 * 1024  # a PEM key is < 1 KiB; refuse to read anything huge


def _spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class PublicKey:
    """A publisher's public key: verifies release and announcement signatures."""

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"publisher keys must be ECDSA P-256, got curve {key.curve.name}")
        self._key = key
        self._key_id = KeyId.of(_spki_der(key))

    @property
    def key_id(self) -> KeyId:
        return self._key_id

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message, _ALGO)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, data: bytes, source: str = "public key") -> PublicKey:
        private_error: KeyFileError | None = None
        if b"PRIVATE KEY" in data:
            try:
                return PrivateKey.from_pem(data, source).public_key
            except KeyFileError as e:
                private_error = e
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            if private_error is not None:  # say why the private key was refused
                raise private_error from None
            raise KeyFileError(
                f"{source} is not a PEM public key (expected a .pub file from 'edgemesh keygen')"
            ) from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise KeyFileError(f"{source} is a {type(key).__name__}, not an ECDSA P-256 key")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> PublicKey:
        return cls.from_pem(_read_key_file(path), str(path))


class PrivateKey:
    """A publisher's private key: signs releases and announcements."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.public_key = PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def derive(cls, secret: bytes) -> PrivateKey:
        """A key derived from ``secret`` (for simulations and tests that must replay)."""
        n = int.from_bytes(hashlib.sha512(b"edgemesh/derive/v1\0" + secret).digest(), "big")
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        return cls(ec.derive_private_key(n % (order - 1) + 1, ec.SECP256R1()))

    @property
    def key_id(self) -> KeyId:
        return self.public_key.key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, _ALGO)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes, source: str = "private key") -> PrivateKey:
        if b"PRIVATE KEY" not in data and b"PUBLIC KEY" in data:
            raise KeyFileError(
                f"{source} is a public key; signing needs the private key file "
                "(the one without .pub)"
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise KeyFileError(
                f"{source} is encrypted; edgemesh needs an unencrypted key"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(
                f"{source} is not a PEM private key (create one with 'edgemesh keygen')"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyFileError(f"{source} is a {type(key).__name__}, not an ECDSA P-256 key")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> PrivateKey:
        return cls.from_pem(_read_key_file(path), str(path))

    def save(self, path: Path, *, force: bool = False) -> Path:
        """Write the key (0600) and ``path.pub`` (0644); returns the .pub path."""
        pub_path = path.with_name(path.name + PUB_SUFFIX)
        if not force:
            for p in (path, pub_path):
                if p.exists() or p.is_symlink():
                    raise KeyFileError(f"{p} already exists; pass --force to overwrite it")
        _write_exclusive(path, self.to_pem(), 0o600, force=force)
        _write_exclusive(pub_path, self.public_key.to_pem(), 0o644, force=force)
        return pub_path


def _read_key_file(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise KeyFileError(f"{path} is a directory, not a key file")
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except PermissionError:
        raise KeyFileError(f"key file {path} is not readable (permission denied)") from None
    except OSError as e:
        raise KeyFileError(f"key file {path} cannot be read: {e.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path} is too large to be a key file")
    if not data.strip():
        raise KeyFileError(f"key file {path} is empty")
    return data


def _write_exclusive(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write via a temp file + fsync + rename; ``O_EXCL`` on the target unless ``force``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"cannot create the directory for {path}: {e.strerror}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with EEXIST rather than overwriting
            os.unlink(tmp)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"{path} already exists; pass --force to overwrite it") from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from None
