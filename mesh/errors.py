"""The one error hierarchy of edgemesh.

Rules:
* every exception edgemesh raises on purpose derives from :class:`EdgemeshError`;
* :class:`RemoteProtocolError` means "the bytes we were given are bad" -- a peer, a
  file from elsewhere, a manifest.  Whoever handles it may penalise the source;
* :class:`LocalProtocolError` means "we were asked to do something invalid";
* foreign exceptions (``OSError``, ``cryptography`` errors, ``msgpack`` errors) are
  mapped to these at the adapter boundary, so callers never catch library types.

Messages are one line: what failed, why, and where useful what to do.
"""

from __future__ import annotations


class EdgemeshError(Exception):
    """Root of every error edgemesh raises on purpose."""


class LocalProtocolError(EdgemeshError):
    """We (the caller) asked for something that is not allowed."""


class RemoteProtocolError(EdgemeshError):
    """Data received from outside (a peer, a file) is malformed or inconsistent."""


class ManifestError(RemoteProtocolError):
    """A release manifest does not decode, or breaks a format rule."""


class TrustError(RemoteProtocolError):
    """A signature is missing, invalid, or made by a key we do not trust for this model."""


class IntegrityError(EdgemeshError):
    """Stored or received content does not match the hash it is named by."""


class ModelFormatError(LocalProtocolError):
    """A file given as a model is not a loadable ONNX model."""


class KeyFileError(LocalProtocolError):
    """A key file is missing, unreadable, of the wrong kind, or would be overwritten."""


class VersionError(LocalProtocolError):
    """A version is not newer than one already present (rollback protection)."""


class StoreError(EdgemeshError):
    """The chunk store cannot complete an operation (I/O failure, missing data)."""


class StoreFullError(StoreError):
    """The disk holding the store is full; nothing partial was kept."""


class NotFoundError(StoreError):
    """A chunk, release or model is not in the store."""


class ConfigError(LocalProtocolError):
    """A configuration value or command-line setting is invalid."""
