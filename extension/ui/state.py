"""The app's state: one object made at start and handed to every script callback and UI handler.

Everything that changes while the server runs lives here (the models folder, the model manager, the
settings, and the job runner that owns the device); nothing lives at module level.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

from .. import paths
from ..fileio import atomic_write_text
from ..jobs import JobRunner
from ..library import HypernetworkLibrary
from ..processing import Txt2ImgResult
from .callbacks import Callbacks, GenerateHook, SettingSpec, load_scripts

log = logging.getLogger(__name__)



@dataclasses.dataclass
class ServeOptions:
    """What ``serve`` and ``build_state`` read; an ``argparse.Namespace`` with (some of) these names works too."""

    listen: bool = False
    port: int | None = None  # None: 7860, or 7861 with nowebui (AUTOMATIC1111's ports)
    server_name: str | None = None  # the bind address, and a Host name answered (extension/host_header.py)
    allowed_hosts: str | None = None  # more Host names answered, comma-separated; "*": any
    gradio_auth: str | None = None
    gradio_auth_path: Path | None = None
    hypernetwork_dir: Path = paths.HYPERNETWORK_DIR
    ckpt_dir: Path = paths.CKPT_DIR
    ckpt: str | None = None
    device: str | None = None
    precision: str | None = None
    outdir: Path = paths.OUTPUT_DIR
    ui_settings_file: Path | None = paths.SETTINGS_FILE
    scripts_dir: Path = paths.SCRIPTS_DIR
    javascript_dir: Path = paths.JAVASCRIPT_DIR
    style_css: Path = paths.STYLE_CSS
    # Use the random-weight demo model even when the trained one exists (tests; also $SD_WEBUI_DEMO_RANDOM=1).
    demo_random: bool = False
    # The REST API (extension/api): on the UI's server with api, alone with nowebui; HTTP Basic with api_auth.
    api: bool = False
    nowebui: bool = False
    api_auth: str | None = None
    api_auth_path: Path | None = None
    api_log: bool = False
    # The folders training may read (data_root) and write (log_directory): --train-data-dir, one or more;
    # None: the project folder. Relative training paths are relative to the first.
    train_data_dir: tuple[Path, ...] | None = None

    @property
    def bind_address(self) -> str:
        return self.server_name or ("0.0.0.0" if self.listen else "127.0.0.1")

    def __post_init__(self):
        if self.port is None:
            self.port = 7861 if self.nowebui else 7860
        if self.train_data_dir is not None:
            roots = [self.train_data_dir] if isinstance(self.train_data_dir, (str, os.PathLike)) else self.train_data_dir
            self.train_data_dir = tuple(Path(root) for root in roots) or None

    @property
    def training_roots(self) -> tuple[Path, ...]:
        """The training folders as real paths (:func:`extension.confine.training_roots`)."""
        from ..confine import training_roots

        return training_roots(self.train_data_dir)

    @classmethod
    def from_namespace(cls, options: Any) -> "ServeOptions":
        if isinstance(options, cls):
            return options
        values = {}
        for field in dataclasses.fields(cls):
            if hasattr(options, field.name) and getattr(options, field.name) is not None:
                values[field.name] = getattr(options, field.name)
        if getattr(options, "precision", None) == "auto":
            values["precision"] = None
        return cls(**values)


class Settings:
    """AUTOMATIC1111-style options: ``key -> value`` with registered defaults, saved as JSON when a path is given.

    Unknown keys found in the file are kept (another version or extension may own them).
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self.specs: dict[str, SettingSpec] = {}
        self._values: dict[str, Any] = {}
        self._lock = threading.RLock()
        if self.path and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self._values.update(data)
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("settings file %s could not be read (%s); using defaults", self.path, exc)

    def register(self, spec: SettingSpec) -> None:
        with self._lock:
            self.specs[spec.key] = spec
            if spec.key in self._values:
                try:
                    self._values[spec.key] = spec.coerce(self._values[spec.key])
                except ValueError:
                    self._values[spec.key] = spec.default

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
            spec = self.specs.get(key)
            return spec.default if spec is not None else default

    def set(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, values: dict[str, Any], save: bool = True) -> list[str]:
        """Set several values (coerced to their types); raises ``ValueError`` before changing anything.

        Returns the keys whose value changed.
        """
        with self._lock:
            coerced = {key: (self.specs[key].coerce(value) if key in self.specs else value)
                       for key, value in values.items()}
            changed = [key for key, value in coerced.items() if self.get(key) != value]
            self._values.update(coerced)
            if save and changed:
                self.save()
            return changed

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {**{key: spec.default for key, spec in self.specs.items()}, **self._values}

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str)
        atomic_write_text(self.path, data)


class AppState:
    """Everything the running app shares: made by :func:`build_state`, passed to scripts as ``ctx``."""

    def __init__(self, options: ServeOptions, library: HypernetworkLibrary, models, callbacks: Callbacks,
                 settings: Settings):
        self.options = options
        self.library = library
        self.models = models
        self.callbacks = callbacks
        self.settings = settings
        self.outdir = Path(options.outdir)
        self.jobs = JobRunner()  # the device: one generation, training run or model load at a time
        self.training = None  # the TrainingMonitor of the latest training run, for the Train tab and the API
        self._preview_cache: dict = {}  # (path, size, mtime) -> data URI of the card thumbnail

    # -- models --------------------------------------------------------------------------------------------
    def current_model(self):
        """The loaded model, loading the default one on first use (under the device lock)."""
        with self.jobs.device("load checkpoint"):
            model = self.loaded_model()
            if model is None:
                model = self.models.current
                self.callbacks.call_each("model_loaded", self, model)
            return model

    def loaded_model(self):
        """The loaded model if one is loaded, without loading anything (``None`` otherwise)."""
        return self.models.loaded

    def load_model(self, name: str | None):
        with self.jobs.device("load checkpoint"):
            model = self.models.load(name)
            self.callbacks.call_each("model_loaded", self, model)
            return model

    # -- generation ----------------------------------------------------------------------------------------
    def interrupt(self) -> bool:
        """Stop the running job (generation or training) at its next step; ``False`` when nothing runs."""
        return self.jobs.interrupt()

    def skip(self) -> bool:
        """Stop the running generation's current batch and go on with the next; ``False`` when nothing runs."""
        return self.jobs.skip()

    def run_before_generate(self, request) -> tuple[Any, list[str]]:
        """Every ``before_generate`` hook in order; a hook that raises stops the generation."""
        messages: list[str] = []
        for fn in self.callbacks.callbacks("before_generate"):
            hook = fn(self, request)
            if isinstance(hook, GenerateHook):
                if hook.request is not None:
                    request = hook.request
                messages.extend(hook.messages)
        return request, messages

    def generate(self, request, progress: Callable[[int, int], None] | None = None, *, job_no: int | None = None,
                 hooks: bool = True, source: str = "", save: bool | None = None) -> Txt2ImgResult:
        """One txt2img call through :mod:`extension.processing` (img2img through :mod:`extension.img2img` for an
        :class:`~extension.img2img.Img2ImgRequest`), as a job on the device.

        It runs inside the job the calling thread already runs (a script making several generations for one
        press passes ``job_no``, the unit of that job this generation is), or else as a job of its own, so
        that every generation can be interrupted, skipped and followed. ``progress(step, total)`` is called
        after each sampling step. With ``hooks``, the ``before_generate``/``after_generate`` callbacks run
        around it.

        Args:
            request: a :class:`~extension.processing.Txt2ImgRequest`.
            progress: called after each sampling step.
            job_no: within a running job, which of its units this generation is.
            hooks: run the scripts' ``before_generate``/``after_generate`` callbacks.
            source: who asks (``"ui"``, ``"api"``), for displays.
            save: write the images under the output folder (None: as the ``samples_save`` setting says).
        """
        from .. import processing
        from ..img2img import Img2ImgRequest, img2img

        # an Img2ImgRequest is img2img (inpainting with a mask); hooks see it as they see a txt2img request
        run, name = (img2img, "img2img") if isinstance(request, Img2ImgRequest) else (processing.txt2img, "txt2img")
        with self.jobs.job(name, job_count=getattr(request, "n_iter", 1), source=source) as job:
            if job_no is not None:
                job.update(0, 0, job_no=job_no)
            model = self.current_model()
            messages: list[str] = []
            if hooks:
                request, messages = self.run_before_generate(request)
            if getattr(request, "pad_cond_uncond", False) is None:  # not given (by an infotext): the setting's
                request = dataclasses.replace(request, pad_cond_uncond=bool(self.settings.get("pad_cond_uncond", False)))
            if save is None:
                save = bool(self.settings.get("samples_save", True))
            result = run(request, model, self.library, outdir=self.outdir if save else None, progress=progress,
                         job=job)
            result.messages[:0] = messages
            if job.interrupted.is_set():
                result.interrupted = True
            if hooks:
                self.callbacks.call_each("after_generate", self, request, result)
            return result

    # -- training ------------------------------------------------------------------------------------------
    def train(self, config, *, monitor=None, source: str = "", template_paths: bool = True):
        """Train a hypernetwork (:func:`extension.training.train_hypernetwork`) as a job on the device.

        Generations asked for meanwhile wait their turn; :meth:`interrupt` stops the run with a save. The run's
        monitor becomes :attr:`training` (what the Train tab and ``/progress`` show).

        Args:
            config: a :class:`~extension.training.TrainingConfig`.
            monitor: a :class:`~extension.training.TrainingMonitor` to fill (one is made otherwise).
            source: who asks (``"ui"``, ``"api"``).
            template_paths: whether the template may be given as a path (the REST API allows names only).
        """
        from ..training import TrainingMonitor, train_hypernetwork

        monitor = monitor or TrainingMonitor()
        with self.jobs.job("train-hypernetwork", source=source) as job:
            self.training = monitor  # on the device: a queued run never takes over the running one's display
            job.set_preview(lambda: _latest_preview(monitor))
            model = self.current_model()
            return train_hypernetwork(config, model, self.library, job=job, monitor=monitor,
                                      template_paths=template_paths, roots=self.options.training_roots)

    # -- previews ------------------------------------------------------------------------------------------
    def preview_data_uri(self, path: Path, size: int = 256) -> str | None:
        """A small JPEG of a card preview as a data URI (cached by the file's identity)."""
        import base64
        import io

        from PIL import Image

        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_size, stat.st_mtime, size)
        cached = self._preview_cache.get(key)
        if cached is not None:
            return cached
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((size, size))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=88)
        except Exception as exc:  # noqa: BLE001 - a broken preview must not break the card
            log.warning("preview %s could not be read: %s", path, exc)
            return None
        uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        if len(self._preview_cache) > 512:
            self._preview_cache.clear()
        self._preview_cache[key] = uri
        return uri


def make_model_manager(options: ServeOptions):
    """The checkpoints folder, with the demo model as the built-in fallback (random weights when asked)."""
    from ..checkpoints import ModelManager
    from ..demo.pretrained import builtin_model

    demo_random = options.demo_random or os.environ.get("SD_WEBUI_DEMO_RANDOM", "") not in ("", "0")
    return ModelManager(options.ckpt_dir, device=options.device, precision=options.precision, default=options.ckpt,
                        builtin=builtin_model(random=demo_random))


def build_state(options: Any, models=None, library: HypernetworkLibrary | None = None) -> AppState:
    """The app's state from serve options: folder, model manager, settings, and the scripts' callbacks."""
    options = ServeOptions.from_namespace(options)
    callbacks = load_scripts(Callbacks(), options.scripts_dir)
    library = library or HypernetworkLibrary(options.hypernetwork_dir)
    models = models if models is not None else make_model_manager(options)
    settings = Settings(options.ui_settings_file)
    state = AppState(options, library, models, callbacks, settings)
    from ..api.options import setting_specs  # AUTOMATIC1111's options that act here (Settings tab and API)

    for spec in [*setting_specs(), *callbacks.collect("settings", state)]:
        settings.register(spec)
    return state


def _latest_preview(monitor):
    """The newest preview picture of a training run, or None."""
    from PIL import Image

    previews = monitor.previews()
    if not previews:
        return None
    with Image.open(previews[-1][1]) as image:
        image.load()
        return image
