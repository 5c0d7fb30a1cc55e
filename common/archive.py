"""Backup archives: a directory packed into one file, optionally encrypted (stdlib,
zstandard, cryptography).

``bart node backup`` and ``bart central backup`` first gather a consistent
snapshot in a staging directory (node/backup.py, central/backup.py); this
module packs it and unpacks it again. The format, version 1::

    magic   8 bytes  b"BARTBK1P" (plain) or b"BARTBK1E" (encrypted)
    plain:  zstd frame of a POSIX tar of the staging directory
    encrypted: 16-byte salt, log2(N) r p (one byte each) for scrypt, then
            chunks: 4-byte big-endian length + ChaCha20-Poly1305 ciphertext of
            up to 1 MiB of the plain form's zstd stream. The nonce is the chunk
            number (8 bytes) after 4 zero bytes; the associated data is the
            header, the chunk number and a byte that is 1 on the last chunk only,
            so chunks cannot be reordered, dropped or cut off unnoticed.

The key comes from a passphrase through scrypt (N=2^15, r=8, p=1: ~0.1 s and
32 MiB, on a Raspberry Pi about a second). An archive holds the keys of a node or
a central: it is written with mode 0600, and encrypted whenever a passphrase is
given — there is no unencrypted fallback once one was asked for.

>>> import tempfile, pathlib
>>> src = pathlib.Path(tempfile.mkdtemp()); (src / "a.txt").write_text("hallo")
5
>>> out = pathlib.Path(tempfile.mkdtemp()) / "b.bart"
>>> pack(src, out, passphrase="lang genoeg wachtwoord")
>>> oct(out.stat().st_mode & 0o777), is_encrypted(out)
('0o600', True)
>>> dest = pathlib.Path(tempfile.mkdtemp()) / "x"
>>> unpack(out, dest, passphrase="lang genoeg wachtwoord"); (dest / "a.txt").read_text()
'hallo'
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import stat
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .datadir import LOCK_FILE
from .files import fsync_dir

__all__ = ["MANIFEST", "ArchiveError", "BackupInfo", "check_output", "check_sqlite",
           "copy_sqlite", "is_encrypted", "is_sqlite", "move_into", "pack", "read_manifest",
           "require_empty", "restoring", "snapshot_dir", "unpack", "write_manifest"]

MAGIC_PLAIN: Final = b"BARTBK1P"
MAGIC_ENCRYPTED: Final = b"BARTBK1E"
CHUNK: Final = 1 << 20
SCRYPT_LOG_N: Final = 15
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: Passphrases shorter than this are refused: the archive holds private keys.
MIN_PASSPHRASE: Final = 12
#: Limits on what an archive may unpack to (a backup is input too).
MAX_MEMBERS: Final = 100_000
MAX_TOTAL: Final = 256 << 30
#: The backup's description, beside the ``data`` tree in the archive.
MANIFEST: Final = "bart-backup.json"
_SQLITE_MAGIC: Final = b"SQLite format 3\0"


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds (its manifest), and the figures of making or restoring it."""

    manifest: dict[str, Any]
    size: int
    seconds: float
_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


class ArchiveError(Exception):
    """A backup archive cannot be written or read; the message says why in words."""


def is_encrypted(path: Path) -> bool:
    """Whether ``path`` is an encrypted backup (ArchiveError if it is no backup)."""
    return _magic(path) == MAGIC_ENCRYPTED


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        head = f.read(8)
    if head not in (MAGIC_PLAIN, MAGIC_ENCRYPTED):
        raise ArchiveError(f"{path} is not a Bart backup (it does not start like one)")
    return head


def _key(passphrase: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    if not 10 <= log_n <= 20 or not 1 <= r <= 16 or not 1 <= p <= 4:
        raise ArchiveError("the backup's key parameters are out of range (damaged file?)")
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=1 << log_n, r=r, p=p,
                          maxmem=(1 << log_n) * r * 128 * 2 + (1 << 20), dklen=32)


class _EncryptingWriter(io.RawIOBase):
    """A write-only stream that seals what it is given in CHUNK-sized pieces."""

    def __init__(self, out: IO[bytes], passphrase: str) -> None:
        super().__init__()
        salt = secrets.token_bytes(16)
        self.header = MAGIC_ENCRYPTED + salt + bytes((SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P))
        self.aead = ChaCha20Poly1305(_key(passphrase, salt, SCRYPT_LOG_N, SCRYPT_R,
                                          SCRYPT_P))
        self.out = out
        self.buf = bytearray()
        self.n = 0
        out.write(self.header)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.buf += data
        while len(self.buf) > CHUNK:  # keep one back: the last chunk is marked
            self._seal(bytes(self.buf[:CHUNK]), last=False)
            del self.buf[:CHUNK]
        return len(data)

    def _seal(self, plain: bytes, *, last: bool) -> None:
        ad = self.header + struct.pack(">QB", self.n, int(last))
        ct = self.aead.encrypt(b"\0\0\0\0" + struct.pack(">Q", self.n), plain, ad)
        self.out.write(struct.pack(">I", len(ct)) + ct)
        self.n += 1

    def finish(self) -> None:
        self._seal(bytes(self.buf), last=True)
        self.buf.clear()


def _decrypted(f: io.BufferedReader, passphrase: str) -> Iterator[bytes]:
    rest = f.read(16 + 3)
    if len(rest) != 19:
        raise ArchiveError("the backup is cut off (its header is incomplete)")
    header = MAGIC_ENCRYPTED + rest
    aead = ChaCha20Poly1305(_key(passphrase, rest[:16], rest[16], rest[17], rest[18]))
    n = 0
    while True:
        size_raw = f.read(4)
        if len(size_raw) != 4:
            raise ArchiveError("the backup is cut off: its last part is missing")
        (size,) = struct.unpack(">I", size_raw)
        if size > CHUNK + 16:
            raise ArchiveError("the backup is damaged (a part is larger than any Bart writes)")
        ct = f.read(size)
        if len(ct) != size:
            raise ArchiveError("the backup is cut off: its last part is missing")
        nonce = b"\0\0\0\0" + struct.pack(">Q", n)
        last = not f.peek(1)
        try:
            plain = aead.decrypt(nonce, ct, header + struct.pack(">QB", n, int(last)))
        except InvalidTag:
            if n == 0:
                raise ArchiveError("the passphrase does not open this backup (or the file "
                                   "is damaged)") from None
            raise ArchiveError("the backup is damaged or cut off (part "
                               f"{n + 1} does not verify)") from None
        yield plain
        n += 1
        if last:
            return


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self.chunks = chunks
        self.buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.buf:
            nxt = next(self.chunks, None)
            if nxt is None:
                return 0
            self.buf = nxt
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def pack(src: Path, out: Path, *, passphrase: str | None = None) -> None:
    """Pack the directory ``src`` into ``out`` (replaced atomically; mode 0600)."""
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        raise ArchiveError(f"the passphrase is too short: at least {MIN_PASSPHRASE} "
                           "characters (the backup holds private keys)")
    out = out.absolute()
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            enc = _EncryptingWriter(f, passphrase) if passphrase is not None else None
            if enc is None:
                f.write(MAGIC_PLAIN)
            sink: IO[bytes] = enc if enc is not None else f  # type: ignore[assignment]
            zw = zstandard.ZstdCompressor(level=6).stream_writer(sink, closefd=False)
            with tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(src.rglob("*")):
                    info = tar.gettarinfo(str(path), str(path.relative_to(src)))
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if path.is_file() and not path.is_symlink():
                        with path.open("rb") as data:
                            tar.addfile(info, data)
                    elif path.is_dir():
                        tar.addfile(info)
            zw.flush(zstandard.FLUSH_FRAME)
            if enc is not None:
                enc.finish()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def unpack(archive: Path, dest: Path, *, passphrase: str | None = None) -> None:
    """Unpack ``archive`` into the new or empty directory ``dest``.

    Only plain files and directories below ``dest`` are made (no links, devices
    or paths outside it); private files keep their mode 0600.
    """
    magic = _magic(archive)
    if magic == MAGIC_ENCRYPTED and passphrase is None:
        raise ArchiveError(f"{archive} is encrypted: give its passphrase "
                           "(BART_BACKUP_PASSPHRASE or --passphrase-file)")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    with archive.open("rb") as f:
        f.read(8)
        source: IO[bytes] = (io.BufferedReader(_ChunkReader(_decrypted(f, passphrase or "")))
                             if magic == MAGIC_ENCRYPTED else f)
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(source)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                _extract(tar, dest)
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise ArchiveError(f"{archive} is damaged or cut off ({exc})") from None


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    total = 0
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise ArchiveError("the backup holds more files than any Bart backup")
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or not name.parts:
            raise ArchiveError(f"the backup holds a path outside its directory: {member.name!r}")
        target = dest.joinpath(*name.parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.chmod(stat.S_IMODE(member.mode) & 0o755 or 0o700)
            continue
        if not member.isfile():
            raise ArchiveError(f"the backup holds something that is not a file: {member.name!r}")
        total += member.size
        if total > MAX_TOTAL:
            raise ArchiveError("the backup unpacks to more than any Bart backup")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = tar.extractfile(member)
        assert data is not None
        file_mode = stat.S_IMODE(member.mode) & 0o644 if member.mode & 0o044 else 0o600
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), file_mode)
            while block := data.read(CHUNK):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())


# -- snapshots of a data directory ------------------------------------------------------


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is an SQLite database file (by its header)."""
    try:
        with path.open("rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def copy_sqlite(src: Path, dst: Path) -> None:
    """Copy the database ``src`` to ``dst`` with the online backup API: one consistent
    snapshot, taken while others write (WAL readers do not block the writer)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30.0)
    try:
        source.execute("PRAGMA busy_timeout = 30000")
        target = sqlite3.connect(dst)
        try:
            source.backup(target)  # all pages in one step: one read transaction
            target.execute("PRAGMA journal_mode = DELETE")
            ok = target.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            target.close()
    finally:
        source.close()
    if ok != "ok":
        raise ArchiveError(f"the copy of {src.name} does not check out ({ok}): the "
                           "database may be damaged")
    os.chmod(dst, 0o600)


def snapshot_dir(src: Path, dest: Path, *, skip: frozenset[str] = frozenset(),
                 skip_dirs: frozenset[str] = frozenset()) -> list[str]:
    """Copy ``src`` into ``dest``: SQLite databases through the backup API, other
    plain files as they are (modes kept). Returns the databases copied."""
    databases: list[str] = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if (rel.parts[0] in skip_dirs or str(rel) in skip or str(rel) == LOCK_FILE
                or path.is_symlink()):
            continue  # the running program's lock is its own, not data
        if path.name.endswith(_SIDE_FILES) and is_sqlite(path.with_name(
                path.name.rsplit("-", 1)[0])):
            continue  # the database's own -wal/-shm: its copy includes them
        target = dest / rel
        if path.is_dir():
            target.mkdir(mode=0o700, exist_ok=True)
            target.chmod(path.stat().st_mode & 0o777)
        elif path.is_file():
            if is_sqlite(path):
                copy_sqlite(path, target)
                databases.append(str(rel))
            else:
                shutil.copy2(path, target)
    return databases


def write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest of a backup being made in ``staging``."""
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def read_manifest(staging: Path, kind: str) -> dict[str, Any]:
    """The manifest of an unpacked backup, checked to be of ``kind``."""
    try:
        manifest: dict[str, Any] = json.loads((staging / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        raise ArchiveError("the file is not a Bart backup of a node or central (it has no "
                          "manifest)") from None
    if not isinstance(manifest, dict) or manifest.get("v") != 1:
        raise ArchiveError("the backup was made by a version of Bart this one does not know")
    if manifest.get("kind") != kind:
        other = manifest.get("kind")
        raise ArchiveError(f"this is a backup of a {other}, not of a {kind}: restore it with "
                          f"bart {other} restore")
    return manifest


def require_empty(data_dir: Path, what: str) -> None:
    """ArchiveError unless ``data_dir`` is new or an empty directory."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise ArchiveError(f"{data_dir} is not empty: a restore goes only into a new or empty "
                          f"directory, so that no {what} is overwritten; give another "
                          "--data-dir, or move that one aside first")


def move_into(tree: Path, data_dir: Path) -> None:
    """Move the unpacked ``tree`` into the new or empty ``data_dir``; as root, the files
    get the owner of an existing ``data_dir`` (the account the node runs as)."""
    owner = None
    if data_dir.is_dir():
        st = data_dir.stat()
        owner = (st.st_uid, st.st_gid)
        for path in tree.iterdir():
            os.replace(path, data_dir / path.name)
    else:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tree, data_dir)
        data_dir.chmod(0o750)
    if owner is not None and os.geteuid() == 0 and owner != (0, 0):
        for path in [data_dir, *data_dir.rglob("*")]:
            os.chown(path, *owner, follow_symlinks=False)


def check_sqlite(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"{path.name} in the backup is damaged ({exc})") from None
    if ok != "ok":
        raise ArchiveError(f"{path.name} in the backup is damaged ({ok})")


def check_output(out: Path, data_dir: Path) -> None:
    """ArchiveError unless a backup can be written to ``out`` (not inside ``data_dir``)."""
    target = out.absolute().resolve()
    if target.is_relative_to(data_dir.resolve()):
        raise ArchiveError(f"{out} is inside the data directory {data_dir}: a backup there is "
                          "lost with what it backs up; write it elsewhere (another disk)")
    if target.is_dir():
        raise ArchiveError(f"{out} is a directory; give a file name, e.g. {out}/backup.bart")
    if not target.parent.is_dir():
        raise ArchiveError(f"the directory {target.parent} does not exist; create it first")


@contextlib.contextmanager
def restoring(archive: Path, data_dir: Path, kind: str, *,
              passphrase: str | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The start of every restore: ``data_dir`` must be new or empty and ``archive`` a
    file; it is unpacked into a staging directory beside ``data_dir`` (the same file
    system, so that the final :func:`move_into` is a rename) and its manifest checked to
    be a ``kind`` backup. Yields (staging, manifest); the staging directory is removed
    afterwards, whatever happened."""
    require_empty(data_dir, kind)
    if not archive.is_file():
        raise ArchiveError(f"{archive} does not exist (or is not a file)")
    parent = data_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bart-restore-", dir=parent))
    try:
        unpack(archive, staging, passphrase=passphrase)
        yield staging, read_manifest(staging, kind)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
