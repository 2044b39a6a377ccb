"""Writing and hashing files: atomic replacement and sha256, written once for the whole project.

Every file a user may load (hypernetworks, ``.optim`` sidecars, settings, training logs) is written beside
its final name under a temporary name unique to the writer, flushed to disk, then renamed over the final
name. A crash or a kill at any moment leaves either the old file or the new one, never half of one; two
threads or processes writing the same file never share a temporary name.
"""
from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

TEMP_PREFIX = "."       # temporary files are hidden: folder listings skip names starting with a dot
TEMP_SUFFIX = ".tmp"


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    Args:
        path: the final file; its folder is created when missing.
        write: fills the file at the path it is given (it may reopen it by name).

    Returns:
        ``path``, as a :class:`~pathlib.Path`. On any error the temporary file is removed and ``path`` is
        left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, publish_mode(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def publish_mode(path) -> int:
    """The permission bits a file written at ``path`` should get: those of the file it replaces, else what a plain
    ``open(path, "w")`` would give (0o666 less the umask). ``mkstemp``'s temporary files are 0o600, which would
    otherwise make every saved network, setting and picture private to this user.

    Args:
        path: the final file.
    """
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return new_file_mode()


def new_file_mode() -> int:
    """0o666 less the process's umask: the bits ``open(path, "w")`` gives a new file."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it (Linux: ``/proc/self/status``; elsewhere 0o022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the final file; its folder is created when missing.
        data: the file's whole content.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the final file; its folder is created when missing.
        text: the file's whole content.
        encoding: how ``text`` is encoded.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def is_utf8_name(name: str) -> bool:
    """Whether a file name, as the OS gave it (undecodable bytes as surrogates), is valid UTF-8: names that are not
    cannot be shown, sent as JSON or typed in a prompt, so folder listings leave them out.

    Args:
        name: a file name or relative path.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_temporary(path) -> bool:
    """Whether ``path`` is a temporary file left by :func:`atomic_write` (e.g. after a crash).

    Args:
        path: a file name or path (only its name is looked at).
    """
    name = Path(path).name
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def remove_leftover_temporaries(path) -> list[Path]:
    """Delete the temporary files a killed writer of ``path`` left beside it (``.NAME.*.tmp``).

    Only for a writer that owns ``path`` exclusively while it runs (training owns its network's file: one run
    per network at a time), since a temporary of a writer still running would go too.

    Args:
        path: the final file whose leftovers to remove.

    Returns:
        the files removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f"{TEMP_PREFIX}{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        if candidate.is_file() and not candidate.is_symlink():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def sha256_file(path) -> str:
    """The sha256 of a file (AUTOMATIC1111's hash); of a folder, the sha256 over every file's
    ``relative/path`` and its own sha256, in sorted order.

    Args:
        path: a file or a folder.

    Returns:
        64 lower-case hex digits; the "short hash" AUTOMATIC1111 shows is the first 10.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_file(file).encode() + b"\n")
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
