"""The models folder: which hypernetwork files exist, what they hold, and the networks loaded from them.

Names are file stems, as AUTOMATIC1111 names them. When several files share a stem, the one
AUTOMATIC1111 would pick (the last in lower-cased path order) keeps the plain stem, so old prompts keep
working; the others are named by their path relative to the folder. A name never resolves to a file outside
the folder. Metadata and hashes are read lazily and cached by (path, size, mtime); loaded networks are
kept in a small cache by the same identity. A broken file is listed with its error; the rest keep working.
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import json
import logging
import os
import threading
from pathlib import Path

from .errors import HypernetworkError
from .fileio import is_utf8_name, sha256_file
from .hypernetwork import Hypernetwork, HypernetworkInfo, load_hypernetwork, read_info
from .hypernetwork.files import SUFFIXES
from .prompt.tags import HypernetworkRequest

logger = logging.getLogger(__name__)
PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
MAX_DESCRIPTION_BYTES = 64 << 10  # a description longer than this is cut (a .json one is ignored)


@dataclasses.dataclass(frozen=True)
class LibraryEntry:
    """One hypernetwork file in the folder (what a directory listing tells, nothing read from the file)."""

    name: str
    path: Path
    rel_path: str
    size: int
    mtime: float
    ctime: float
    preview: Path | None
    description_path: Path | None
    mtime_ns: int = 0
    inode: int = 0

    @property
    def identity(self) -> tuple[str, int, int, int]:
        """What tells one version of the file from another: an edit in place changes the size or the mtime,
        and a save (written beside, then renamed over) also changes the inode, even within one mtime tick."""
        return str(self.path), self.size, self.mtime_ns, self.inode

    @property
    def local_preview(self) -> Path:
        """Where "replace preview" writes: ``NAME.preview.png`` beside the file."""
        return self.path.with_name(f"{self.path.stem}.preview.png")

    def description(self) -> str:
        """The text of ``NAME.txt``/``NAME.description.txt``, or ``description``/``notes`` of ``NAME.json``."""
        if self.description_path is None:
            return ""
        try:
            with open(self.description_path, "rb") as handle:
                raw = handle.read(MAX_DESCRIPTION_BYTES + 1)
        except OSError:
            return ""
        if len(raw) > MAX_DESCRIPTION_BYTES:  # not a description: its first part only (JSON: nothing)
            if self.description_path.suffix.lower() == ".json":
                return ""
            raw = raw[:MAX_DESCRIPTION_BYTES]
        text = raw.decode("utf-8", errors="replace")
        if self.description_path.suffix.lower() != ".json":
            return text.strip()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return ""
        if not isinstance(data, dict):
            return ""
        return "\n".join(str(data[k]).strip() for k in ("description", "notes") if data.get(k)).strip()


@dataclasses.dataclass(frozen=True)
class EntryDetails:
    """An entry's metadata, or the error that stops it from loading."""

    entry: LibraryEntry
    info: HypernetworkInfo | None
    error: str | None


@dataclasses.dataclass(frozen=True)
class RefreshReport:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def _inside(path: Path, root_real: Path) -> bool:
    """Whether ``path`` (in the folder as listed) is, once its links are resolved, still inside the folder."""
    try:
        return path.resolve(strict=True).is_relative_to(root_real)
    except (OSError, RuntimeError):  # dangling, a loop, unreadable
        return False


SKIPPED_LINK_OUT = "a link to something outside the folder"
SKIPPED_LINK_BROKEN = "a link to nothing (dangling, or a loop)"
SKIPPED_NOT_UTF8 = "its name is not valid UTF-8"


def _scan(root: Path, skipped: list[tuple[str, str]] | None = None) -> list[LibraryEntry]:
    """Every hypernetwork file under ``root`` (recursive). Links are never followed out of the folder: a file,
    preview or description that is a link to something outside it (or to nothing) is left out, unread. What
    looks like a hypernetwork file but is left out goes into ``skipped`` as ``(relative path, why)``."""
    found = []
    skipped = [] if skipped is None else skipped
    root_real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        links = {name for name in filenames if (here / name).is_symlink()}
        present = {name for name in filenames if name not in links or _inside(here / name, root_real)}
        for filename in filenames:
            stem, suffix = os.path.splitext(filename)
            if suffix.lower() not in SUFFIXES or filename.startswith(".") or stem == "None":
                continue
            if filename not in present:
                broken = not os.path.exists(here / filename)
                skipped.append((_shown((here / filename).relative_to(root).as_posix()),
                                SKIPPED_LINK_BROKEN if broken else SKIPPED_LINK_OUT))
                continue
            path = here / filename
            rel_path = path.relative_to(root).as_posix()
            if not is_utf8_name(rel_path):  # a name that cannot be shown, sent as JSON or typed in a prompt
                skipped.append((_shown(rel_path), SKIPPED_NOT_UTF8))
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            if not stat_is_file(stat):
                continue
            preview = next((here / f"{stem}{mid}.{ext}" for mid in ("", ".preview")
                            for ext in PREVIEW_EXTENSIONS if f"{stem}{mid}.{ext}" in present), None)
            description = next((here / f"{stem}{ext}" for ext in (".txt", ".description.txt", ".json")
                                if f"{stem}{ext}" in present), None)
            found.append(LibraryEntry(
                name=stem, path=path, rel_path=rel_path, size=stat.st_size,
                mtime=stat.st_mtime, ctime=stat.st_ctime, preview=preview, description_path=description,
                mtime_ns=stat.st_mtime_ns, inode=stat.st_ino))
    return _unique_names(found)


def stat_is_file(stat: os.stat_result) -> bool:
    import stat as stat_module

    return stat_module.S_ISREG(stat.st_mode)


def _shown(name: str) -> str:
    """``name`` printable: undecodable bytes as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unique_names(entries: list[LibraryEntry]) -> list[LibraryEntry]:
    entries = sorted(entries, key=lambda e: e.rel_path.lower())
    by_stem: dict[str, list[LibraryEntry]] = collections.defaultdict(list)
    for entry in entries:
        by_stem[entry.name].append(entry)
    out = []
    for stem, group in by_stem.items():
        if len(group) == 1:
            out.extend(group)
            continue
        out.append(group[-1])  # AUTOMATIC1111's winner keeps the plain stem
        without_suffix = collections.Counter(os.path.splitext(e.rel_path)[0] for e in group[:-1])
        for entry in group[:-1]:
            rel_stem = os.path.splitext(entry.rel_path)[0]
            unique = rel_stem if without_suffix[rel_stem] == 1 and rel_stem != stem else entry.rel_path
            out.append(dataclasses.replace(entry, name=unique))
    return sorted(out, key=lambda e: e.rel_path.lower())


class HypernetworkLibrary:
    """The hypernetworks folder. Thread-safe; holds caches, so make one per folder and share it."""

    def __init__(self, root, max_loaded: int = 8):
        self.root = Path(root).resolve()
        self.max_loaded = max_loaded
        self._lock = threading.RLock()
        self._entries: dict[str, LibraryEntry] | None = None
        self._details: dict[tuple, EntryDetails] = {}
        self._hashes: dict[tuple, str] = {}
        self._loaded: collections.OrderedDict[tuple, Hypernetwork] = collections.OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}  # one per file being read, so the listing never waits
        self._hasher: threading.Thread | None = None
        self._skipped: list[tuple[str, str]] = []

    # -- listing -----------------------------------------------------------------------------------------
    def refresh(self) -> RefreshReport:
        """Rescan the folder; report what was added, changed and removed since the last scan."""
        skipped: list[tuple[str, str]] = []
        entries = {e.name: e for e in _scan(self.root, skipped)} if self.root.is_dir() else {}
        with self._lock:
            self._skipped = skipped
            before = self._entries or {}
            self._entries = entries
            live = {e.identity for e in entries.values()}
            for cache in (self._details, self._hashes, self._loaded):
                for key in [k for k in cache if k not in live]:
                    del cache[key]
        return RefreshReport(
            added=tuple(sorted(set(entries) - set(before))),
            changed=tuple(sorted(n for n in set(entries) & set(before) if entries[n].identity != before[n].identity)),
            removed=tuple(sorted(set(before) - set(entries))),
        )

    def entries(self) -> list[LibraryEntry]:
        with self._lock:
            if self._entries is None:
                self.refresh()
            return list(self._entries.values())

    def skipped(self) -> list[tuple[str, str]]:
        """``(relative path, why)`` of each file the last scan left out although its suffix is a hypernetwork's
        (links out of the folder or to nothing, names that are not UTF-8): never read."""
        with self._lock:
            if self._entries is None:
                self.refresh()
            return list(self._skipped)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def get(self, name: str) -> LibraryEntry | None:
        """The entry called ``name`` (as listed), or ``None``. Never a path outside the folder."""
        with self._lock:
            if self._entries is None:
                self.refresh()
            entry = self._entries.get(name)
            if entry is None and name and not os.path.isabs(name):
                # A relative path with or without suffix ("sub/foo", "sub/foo.pt") also names a listed file.
                wanted = name.replace("\\", "/")
                entry = next((e for e in self._entries.values()
                              if wanted in (e.rel_path, os.path.splitext(e.rel_path)[0])), None)
            return entry

    # -- metadata ----------------------------------------------------------------------------------------
    def details(self, entry: LibraryEntry) -> EntryDetails:
        """Metadata of ``entry`` (cached by path, size and mtime), or the error that stops it loading."""
        with self._lock:
            cached = self._details.get(entry.identity)
        if cached is not None:
            return cached
        try:
            self._check_inside(entry)
            info, error = read_info(entry.path), None
        except HypernetworkError as exc:
            info, error = None, exc.message
        except Exception as exc:  # noqa: BLE001 - one file, whatever it holds, never breaks the listing
            logger.exception("reading %s failed", entry.path)
            info, error = None, f"could not be read ({type(exc).__name__}: {str(exc)[:300]})"
        details = EntryDetails(entry, info, error)
        with self._lock:
            self._details[entry.identity] = details
            if info is not None and info.sha256:
                self._hashes[entry.identity] = info.sha256
        return details

    def sha256(self, entry: LibraryEntry) -> str:
        with self._lock:
            known = self._hashes.get(entry.identity)
        if known is None:
            known = sha256_file(entry.path)
            with self._lock:
                self._hashes[entry.identity] = known
        return known

    def hash_in_background(self) -> None:
        """Hash every listed file whose hash is not known yet, in a daemon thread (one at a time), so that
        search by hash works without making a listing wait for it."""
        with self._lock:
            if self._hasher is not None and self._hasher.is_alive():
                return
            self._hasher = threading.Thread(target=self._hash_pending, name="hypernetwork-hasher", daemon=True)
            self._hasher.start()

    def _hash_pending(self) -> None:
        while pending := [e for e in self.entries() if self.known_sha256(e) is None and e.path.exists()]:
            for entry in pending:
                try:
                    self.sha256(entry)
                except OSError:
                    with self._lock:  # unreadable now; don't spin on it
                        self._hashes.setdefault(entry.identity, "")

    def known_sha256(self, entry: LibraryEntry) -> str | None:
        """The hash if it has been computed already (a listing never hashes by itself)."""
        with self._lock:
            return self._hashes.get(entry.identity) or None

    # -- loading -----------------------------------------------------------------------------------------
    def load(self, name: str) -> Hypernetwork:
        """The network called ``name``, from the cache when its file is unchanged.

        Raises ``KeyError`` for an unknown name and :class:`HypernetworkError` for a file that cannot load.
        Loaded networks are shared between requests and must not be mutated by them (pass multipliers per
        call instead of ``set_multiplier``).
        """
        entry = self.get(name)
        if entry is None:
            raise KeyError(self.unknown_message(name))
        with self._lock:
            network = self._cached(entry)
            if network is not None:
                return network
            loading = self._loading.setdefault(entry.identity, threading.Lock())
        # The file is read outside the library's lock (listings and other files go on meanwhile), and once:
        # a second request for the same file waits here for the first and takes its result.
        with loading:
            with self._lock:
                network = self._cached(entry)
            if network is not None:
                return network
            try:
                self._check_inside(entry)
                network = load_hypernetwork(entry.path)
            except Exception as exc:
                with self._lock:
                    self._loading.pop(entry.identity, None)
                if isinstance(exc, HypernetworkError):
                    raise
                logger.exception("loading %s failed", entry.path)  # a file's failure is the file's, with its name
                raise HypernetworkError(f"could not be loaded ({type(exc).__name__}: {str(exc)[:300]})",
                                        entry.path) from exc
            with self._lock:
                self._hashes.setdefault(entry.identity, network.sha256)
                self._loaded[entry.identity] = network
                self._loading.pop(entry.identity, None)
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            return network

    def _cached(self, entry: LibraryEntry) -> Hypernetwork | None:
        """The loaded network of ``entry``'s file as it is now, marked most recently used (hold the lock)."""
        network = self._loaded.get(entry.identity)
        if network is not None:
            self._loaded.move_to_end(entry.identity)
        return network

    def _check_inside(self, entry: LibraryEntry) -> None:
        """Refuse to open ``entry`` if, since the scan, it became a link out of the folder."""
        if entry.path.is_symlink() and not _inside(entry.path, self.root):
            raise HypernetworkError("the file is now a link to something outside the hypernetworks folder; "
                                    "it was not read", entry.path)

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"unknown hypernetwork {name!r}: no such file in {self.root}.{hint}"

    def resolve(self, requests: list[HypernetworkRequest]) -> tuple[list[tuple[Hypernetwork, float]], list[str]]:
        """Load what the prompt asks for, in order; a message for each name that is unknown or fails."""
        networks: list[tuple[Hypernetwork, float]] = []
        messages: list[str] = []
        for request in requests:
            try:
                networks.append((self.load(request.name), request.multiplier))
            except KeyError as exc:
                messages.append(f"<hypernet:{request.name}>: {exc.args[0]}")
            except HypernetworkError as exc:
                messages.append(f"<hypernet:{request.name}>: could not be loaded: {exc}")
        return networks, messages

    def path_inside(self, relative: str) -> Path:
        """``relative`` resolved under the folder; ``ValueError`` if it would leave it."""
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root):
            raise ValueError(f"{relative!r} is outside the hypernetworks folder {self.root}")
        return candidate
