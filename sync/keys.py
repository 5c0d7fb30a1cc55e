"""Node and central keys: generate on the device, store 0600, load strictly.

A key directory holds four files:

- ``signing.key`` — Ed25519 private key, raw 32 bytes, base64 (mode 0600);
- ``signing.pub`` — its public key, base64;
- ``encryption.key`` — X25519 private key, raw 32 bytes, base64 (mode 0600);
- ``encryption.pub`` — its public key, base64.

Private keys are created with ``O_EXCL`` and mode 0600 from the start (no
window in which they are readable), and a private key file readable by group
or others is refused on load.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .errors import BadSignature, InsecureKeyFile, KeyError_

_RAW = (Encoding.Raw, PublicFormat.Raw)
_B32 = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no I, O, 0, 1: read aloud over a phone


def b64(data: bytes) -> str:
    """Standard base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, size: int, what: str) -> bytes:
    """Decode base64 ``text`` that must hold exactly ``size`` bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise KeyError_(f"{what}: not valid base64") from exc
    if len(raw) != size:
        raise KeyError_(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def public_bytes(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    """Raw 32-byte form of a public key."""
    return key.public_bytes(*_RAW)


def fingerprint(public_key: bytes) -> str:
    """Short human-checkable fingerprint of a public key, e.g. ``QX7K-3MFA-P2RT``.

    >>> len(fingerprint(bytes(32)))
    14
    """
    digest = hashlib.sha256(b"bart-fp-v1" + public_key).digest()
    bits = int.from_bytes(digest[:8], "big")
    chars = "".join(_B32[(bits >> (5 * i)) & 31] for i in range(12))
    return f"{chars[0:4]}-{chars[4:8]}-{chars[8:12]}"


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Verify an Ed25519 ``signature``; raise :class:`BadSignature` if it fails."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


@dataclass(frozen=True)
class KeyPair:
    """The two private keys of a node (or central) and their public halves."""

    signing: Ed25519PrivateKey
    encryption: X25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        """Fresh keys from the operating system's random source."""
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def signing_public(self) -> bytes:
        """Raw Ed25519 public key."""
        return public_bytes(self.signing.public_key())

    @property
    def encryption_public(self) -> bytes:
        """Raw X25519 public key."""
        return public_bytes(self.encryption.public_key())

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the signing public key (what people compare)."""
        return fingerprint(self.signing_public)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message``."""
        return self.signing.sign(message)

    def save(self, directory: Path) -> None:
        """Write the four key files; refuses to overwrite existing keys."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        raw_sign = self.signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw_enc = self.encryption.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        _write_private(directory / "signing.key", b64(raw_sign))
        _write_private(directory / "encryption.key", b64(raw_enc))
        (directory / "signing.pub").write_text(b64(self.signing_public) + "\n")
        (directory / "encryption.pub").write_text(b64(self.encryption_public) + "\n")

    @classmethod
    def load(cls, directory: Path) -> KeyPair:
        """Load keys written by :meth:`save`, refusing unsafe permissions."""
        sign = Ed25519PrivateKey.from_private_bytes(
            unb64(_read_private(directory / "signing.key"), 32, "signing.key")
        )
        enc = X25519PrivateKey.from_private_bytes(
            unb64(_read_private(directory / "encryption.key"), 32, "encryption.key")
        )
        pair = cls(sign, enc)
        pub = directory / "signing.pub"
        if pub.exists() and unb64(pub.read_text(), 32, "signing.pub") != pair.signing_public:
            raise KeyError_(f"{pub} does not match signing.key")
        return pair

    @staticmethod
    def exists(directory: Path) -> bool:
        """True when a signing key is present in ``directory``."""
        return (directory / "signing.key").exists()


def _write_private(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyError_(f"{path} exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_private(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyError_(f"{path} is missing (run `bart node init` first)") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFile(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; private keys must be 0600 "
            f"(fix: chmod 600 {path})"
        )
    return path.read_text()
