"""The checkpoints folder and the one checkpoint loaded from it.

Two kinds of checkpoint live in the checkpoints folder (``models/Stable-diffusion`` by default):
AUTOMATIC1111-style single files (``*.safetensors``, ``*.ckpt``) and diffusers folders (a directory with
``model_index.json`` and weights). :class:`ModelManager` lists them with AUTOMATIC1111's names and titles,
finds one by any of those names or its hash, and keeps one loaded (:class:`LoadedModel`). A host may give
it a :class:`BuiltinModel` to use when no checkpoint is chosen (this project's host gives the demo model);
the manager itself knows nothing about which.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import re
import threading
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError
from ..fileio import is_utf8_name, sha256_file
from .convert import load_diffusers_folder, load_single_file
from .detect import SINGLE_FILE_SUFFIXES, detect_architecture, sidecar_config_dir
from .device import resolve_device, resolve_dtype
from .weights import read_shapes

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    """A model that ships with the host, used when no checkpoint is chosen.

    ``load(device, dtype)`` returns its :class:`LoadedModel`; ``names`` are what a user may call it.

    Args:
        name: its name (the checkpoint dropdown's entry).
        load: ``load(device, dtype) -> LoadedModel``.
        aliases: other names that choose it.
    """

    name: str
    load: Callable[[torch.device, torch.dtype], "LoadedModel"]
    aliases: tuple[str, ...] = ()
    path: Path | None = None  # the file or folder it loads from (its hash); None: nothing to hash (random weights)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint in the checkpoints folder, named like AUTOMATIC1111 names it.

    ``name`` is the path relative to the folder (``sub/v1-5.safetensors``), ``title`` that plus
    ``" [shorthash]"`` once the file was hashed, ``model_name`` the relative path without extension with
    ``/`` turned into ``_`` (the file stem for a top-level file), ``name_for_extra`` the file stem (the
    infotext ``Model:`` value).
    """
    title: str
    model_name: str
    filename: str                 # absolute path of the file or folder
    name: str
    name_for_extra: str
    kind: str                     # 'single-file' | 'diffusers'
    size: int                     # bytes (all files, for a folder)
    mtime: float
    sha256: str | None = None
    config: str | None = None     # NAME.config/ or NAME.yaml beside a single file, when present

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None


def _inside(path: Path, root_real: Path) -> bool:
    """Whether ``path`` is, once its links are resolved, inside ``root_real`` (False: dangling, a loop)."""
    try:
        return path.resolve(strict=True).is_relative_to(root_real)
    except (OSError, RuntimeError):
        return False


def _folder_has_weights(folder: Path) -> bool:
    root = folder.resolve()
    return any(p.suffix in WEIGHT_SUFFIXES for p in folder.rglob("*")
               if p.is_file() and (not p.is_symlink() or _inside(p, root)))


class LoadedModel:
    """A loaded checkpoint: the diffusers pipeline generation uses, and what infotexts say about it.

    Args:
        pipe: the diffusers pipeline.
        name: the infotext's ``Model:`` value (the file stem).
        architecture: ``'sd1'``, ``'sd2'``, ``'sd2-v'`` or ``'sdxl'``.
        device: where the pipeline runs.
        dtype: its precision.
        info: the checkpoint it came from, or None (a built-in model).
        hasher: computes the file's sha256 on first use, or None (no hash: random weights).
    """

    def __init__(self, pipe, *, name: str, architecture: str, device: torch.device, dtype: torch.dtype,
                 info: CheckpointInfo | None = None, hasher: Callable[[], str | None] | None = None):
        self.pipe = pipe
        self.name = name
        self.architecture = architecture
        self.device = torch.device(device)
        self.dtype = dtype
        self.info = info
        self._hasher = hasher
        self._sha256: str | None = None
        self._hash_lock = threading.Lock()

    @property
    def sha256(self) -> str | None:
        """Full sha256 of the file (computed on first use, then cached by the manager); None for random weights."""
        with self._hash_lock:
            if self._sha256 is None and self._hasher is not None:
                self._sha256 = self._hasher()
            return self._sha256

    @property
    def shorthash(self) -> str | None:
        """AUTOMATIC1111 ``Model hash:`` (sha256[:10])."""
        sha = self.sha256
        return sha[:10] if sha else None

    @property
    def filename(self) -> str | None:
        return self.info.filename if self.info else None

    @property
    def is_sdxl(self) -> bool:
        return self.architecture == "sdxl"

    @property
    def prediction_type(self) -> str:
        """``'epsilon'`` or ``'v_prediction'`` (the training target hypernetwork training must use)."""
        return self.pipe.scheduler.config.get("prediction_type", "epsilon")

    def _attentions(self):
        from diffusers.models.attention_processor import Attention
        return [(n, m) for n, m in self.pipe.unet.named_modules() if isinstance(m, Attention)]

    def attention_widths(self) -> set[int]:
        """Every context width an attention layer of the UNet reads (``to_k.in_features``)."""
        return {m.to_k.in_features for _, m in self._attentions()}

    def self_attention_widths(self) -> set[int]:
        return {m.to_k.in_features for n, m in self._attentions() if n.endswith("attn1")}

    @property
    def cross_attention_width(self) -> int:
        """The width of the text context the UNet cross-attends to (768 SD1, 1024 SD2, 2048 SDXL)."""
        widths = {m.to_k.in_features for n, m in self._attentions() if n.endswith("attn2")}
        return max(widths) if widths else int(self.pipe.unet.config.cross_attention_dim)

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, {self.architecture}, {self.device}, {self.dtype})"


class ModelManager:
    """The checkpoints folder and the one checkpoint loaded from it. Thread-safe.

    ``default`` names the checkpoint loaded when none is chosen; without it, ``builtin`` (a model that
    ships with the host, such as the demo model), else an error. Loading another checkpoint drops this
    manager's reference to the old one first (callers still holding the old :class:`LoadedModel` keep it
    alive).

    Args:
        ckpt_dir: the checkpoints folder.
        device: ``--device`` (:func:`~extension.checkpoints.device.resolve_device`).
        precision: ``--precision`` (:func:`~extension.checkpoints.device.resolve_dtype`).
        default: the checkpoint to load when none is chosen (``--ckpt``), or None.
        builtin: the model to fall back on when no checkpoint is chosen and there is no default, or None.
    """

    def __init__(self, ckpt_dir, device=None, precision=None, default: str | None = None, *,
                 builtin: BuiltinModel | None = None):
        self.ckpt_dir = Path(ckpt_dir).resolve()
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.default = default
        self.builtin = builtin
        self._lock = threading.RLock()
        self._current: LoadedModel | None = None
        self._current_key: tuple | None = None
        self._hashes: dict[tuple, str] = {}
        self._hash_lock = threading.Lock()

    # listing
    def _stat_key(self, path: Path) -> tuple:
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            return (str(path), sum(p.stat().st_size for p in files), max((p.stat().st_mtime_ns for p in files),
                                                                         default=0))
        stat = path.stat()
        return (str(path), stat.st_size, stat.st_mtime_ns)

    def _info(self, path: Path, kind: str) -> CheckpointInfo:
        key = self._stat_key(path)
        rel = path.relative_to(self.ckpt_dir).as_posix()
        stem = path.name if kind == "diffusers" else path.stem
        no_ext = rel if kind == "diffusers" else rel[: -len(path.suffix)]
        with self._hash_lock:
            sha = self._hashes.get(key)
        config = None
        if kind == "single-file":
            sidecar = sidecar_config_dir(path)
            config = str(sidecar) if sidecar else (str(path.with_suffix(".yaml"))
                                                   if path.with_suffix(".yaml").is_file() else None)
        return CheckpointInfo(title=f"{rel} [{sha[:10]}]" if sha else rel, model_name=no_ext.replace("/", "_"),
                              filename=str(path), name=rel, name_for_extra=stem, kind=kind, size=key[1],
                              mtime=key[2] / 1e9, sha256=sha, config=config)

    def list_checkpoints(self) -> list[CheckpointInfo]:
        """Every ``*.safetensors``/``*.ckpt`` and diffusers folder under the checkpoints folder (rescanned).

        Only the directory is read (names, sizes, times). Links are never followed out of the folder: a file
        that links outside it (or to nothing) is not listed, a linked folder is not entered."""
        found: list[CheckpointInfo] = []
        if not self.ckpt_dir.is_dir():
            return found
        for root, dirs, files in os.walk(self.ckpt_dir, followlinks=False):
            here = Path(root)
            if here != self.ckpt_dir and "model_index.json" in files:
                dirs[:] = []
                if _folder_has_weights(here):  # a NAME.config/ sidecar holds configs only
                    found.append(self._info(here, "diffusers"))
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                path = here / name
                if path.suffix.lower() not in SINGLE_FILE_SUFFIXES or name.startswith(".") or not is_utf8_name(name):
                    continue
                if path.is_symlink() and not _inside(path, self.ckpt_dir):
                    continue  # a link out of the folder (or to nothing) is never listed nor opened
                if path.is_file():
                    found.append(self._info(path, "single-file"))
        return sorted(found, key=lambda i: i.name.lower())

    def find(self, name: str) -> CheckpointInfo:
        """The checkpoint called ``name``: a title, ``name``, ``model_name``, file stem, relative path, absolute
        path inside the folder, or (short) hash. A :class:`ModelError` says why nothing matched.

        Args:
            name: any of the names above; a ``" [hash]"`` suffix is allowed.

        Raises:
            ModelError: no name given, a path outside the folder, or no match (the message lists some).
        """
        if not isinstance(name, str) or not name.strip():
            raise ModelError("no checkpoint name given")
        wanted = name.strip()
        infos = self.list_checkpoints()
        bare = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", wanted)
        tiers = (lambda i: {i.title, i.name, i.filename},  # exact names first, the bare file stem last
                 lambda i: {i.model_name, i.name.rsplit(".", 1)[0] if i.kind == "single-file" else i.name},
                 lambda i: {i.sha256, i.shorthash} if i.sha256 else set(),
                 lambda i: {i.name_for_extra})
        for aliases in tiers:
            for candidate in dict.fromkeys((wanted, bare)):
                for info in infos:
                    if candidate in aliases(info):
                        return info
        path = Path(bare)
        resolved = (path if path.is_absolute() else self.ckpt_dir / path).resolve()
        if resolved != self.ckpt_dir and self.ckpt_dir not in resolved.parents:
            raise ModelError(f"checkpoint {name!r}: the path is outside the checkpoints folder {self.ckpt_dir}")
        for info in infos:
            if Path(info.filename).resolve() == resolved:
                return info
        names = ([f"{self.builtin.name} (built in)"] if self.builtin is not None else []) + [i.title for i in infos]
        available = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "") or "none"
        raise ModelError(f"checkpoint {name!r} not found in {self.ckpt_dir} (available: {available})")

    def sha256(self, info: CheckpointInfo) -> str:
        """Full sha256 of a checkpoint (cached in this manager by path, size and mtime; thread-safe).

        Args:
            info: a checkpoint from :meth:`list_checkpoints`.
        """
        return self._sha256_of(Path(info.filename))

    def builtin_sha256(self) -> str | None:
        """The built-in model's sha256 (cached as a checkpoint's), or None when it has no files (random weights)."""
        path = getattr(self.builtin, "path", None)
        return self._sha256_of(Path(path)) if path is not None and Path(path).exists() else None

    def _sha256_of(self, path: Path) -> str:
        key = self._stat_key(path)
        with self._hash_lock:
            known = self._hashes.get(key)
        if known is None:
            known = sha256_file(path)  # outside the lock: hashing a large file must not block other lookups
            with self._hash_lock:
                self._hashes[key] = known
        return known

    # loading
    @property
    def loaded(self) -> LoadedModel | None:
        """The loaded checkpoint, or None; never loads anything."""
        with self._lock:
            return self._current

    @property
    def current(self) -> LoadedModel:
        """The loaded checkpoint; the default one is loaded on first use."""
        with self._lock:
            if self._current is None:
                return self.load(None)
            return self._current

    def _target(self, name: str | None):
        """``('builtin', None)`` or ``('checkpoint', CheckpointInfo)``."""
        if name is None or (isinstance(name, str) and not name.strip()):
            if self.default:
                return self._target(self.default)
            if self.builtin is None:
                raise ModelError(f"no checkpoint chosen and none to fall back on (put one in {self.ckpt_dir})")
            return ("builtin", None)
        try:
            return ("checkpoint", self.find(name))
        except ModelError:
            if self.builtin is not None and name.strip() in self.builtin.names:
                return ("builtin", None)
            raise

    def _key(self, target) -> tuple:
        kind, info = target
        return ("builtin",) if kind == "builtin" else (info.filename, info.size, info.mtime)

    def load(self, name: str | None = None) -> LoadedModel:
        """Load checkpoint ``name`` (None: the default) unless it is already loaded; free the previous one.

        Args:
            name: any name :meth:`find` accepts, a name of the built-in model, or None for the default.

        Returns:
            The :class:`LoadedModel`, now :attr:`current`.

        Raises:
            ModelError: the checkpoint is unknown or fails to load; the previous one is then loaded again (when
                it can be).
        """
        with self._lock:
            target = self._target(name)
            key = self._key(target)
            if self._current is not None and key == self._current_key:
                return self._current
            kind, info = target
            if kind == "checkpoint" and info.kind == "single-file" and info.filename.lower().endswith(".safetensors"):
                detect_architecture(read_shapes(info.filename), info.filename)  # cheap check before unloading
            previous = (self._current_key, self._previous_target())
            self.unload()
            try:
                model = self._load_target(target)
            except ModelError:
                self._restore(previous)
                raise
            except Exception as exc:  # a loader failure we did not foresee: still the file's problem
                self._restore(previous)
                where = info.filename if info else f"the built-in model {self.builtin.name}"
                raise ModelError(f"{where}: loading failed ({type(exc).__name__}: {str(exc)[:500]})") from exc
            self._current, self._current_key = model, key
            return model

    def _previous_target(self):
        if self._current is None:
            return None
        return ("builtin", None) if self._current_key == ("builtin",) else ("checkpoint", self._current.info)

    def _restore(self, previous) -> None:
        key, target = previous
        if target is None:
            return
        try:
            self._current, self._current_key = self._load_target(target), key
        except Exception:  # the old one cannot come back either; stay unloaded
            logger.exception("could not reload the previous checkpoint")

    def _load_target(self, target) -> LoadedModel:
        kind, info = target
        if kind == "builtin":
            return self.builtin.load(self.device, self.dtype)
        if info.kind == "diffusers":
            pipe, arch = load_diffusers_folder(info.filename, self.device, self.dtype)
        else:
            pipe, arch = load_single_file(info.filename, self.device, self.dtype)
        return LoadedModel(pipe, name=info.name_for_extra, architecture=arch, device=self.device, dtype=self.dtype,
                           info=info, hasher=lambda: self.sha256(info))

    def unload(self) -> None:
        """Drop the loaded checkpoint and give its memory back."""
        with self._lock:
            self._current = None
            self._current_key = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
