"""The script API: how the files in ``scripts/`` hook into the host, AUTOMATIC1111-style, without globals.

A script is a Python file in ``scripts/`` that defines ``register(callbacks: Callbacks) -> None``. The host
creates one :class:`Callbacks` per app, imports every ``scripts/*.py`` in name order (a file starting with
``_`` is skipped), calls its ``register`` with that object, and later calls what was registered, always
passing the app's state object explicitly (:class:`extension.ui.state.AppState`, ``ctx`` below; ``ui`` is
the page's :class:`extension.ui.txt2img.PageUI`). Nothing is stored at module level: two apps in one
process have two independent registries.

A script registers with ``callbacks.on_<hook>(fn)`` (usable as a decorator) or
``callbacks.add_txt2img_script(script)``. For example::

    def register(callbacks):
        callbacks.on_before_generate(lambda ctx, request: GenerateHook(messages=["hello"]))

Hooks, in the order the host calls them:

``settings(fn)``
    ``fn(ctx) -> Iterable[SettingSpec]``: settings the script owns; they appear on the Settings tab under
    their ``section`` and are read with ``ctx.settings.get(key)``. Called once when the state is created.
``model_loaded(fn)``
    ``fn(ctx, model)`` after a checkpoint (re)loads, under the device lock.
``extra_networks_tabs(fn)``
    ``fn(ctx, ui: PageUI) -> Iterable[UiTab]``: sub-tabs of the txt2img tab beside "Generation" (where
    AUTOMATIC1111 shows its extra-network cards). ``UiTab.build(ctx, ui)`` is called inside the tab's
    ``gr.Tab`` context and creates the components; it may wire events to ``ui``'s components.
``txt2img_scripts(script)``
    a :class:`Script` offered in the txt2img tab's "Script" dropdown (AUTOMATIC1111's ``scripts.Script``):
    ``script.ui(ctx, ui)`` returns the components whose values are passed to ``script.run``, and
    ``script.run(ctx, request, *values, progress=...)`` does the generation in place of plain txt2img,
    usually by calling ``ctx.generate(request, ...)`` one or more times.
``ui_tabs(fn)``
    ``fn(ctx) -> Iterable[UiTab]``: top-level tabs after txt2img (``UiTab.build(ctx, None)``).
``ui_loaded(fn)``
    ``fn(ctx, ui: PageUI, demo: gr.Blocks)`` once every tab exists, still inside the ``gr.Blocks``
    context: the place for events that span tabs (e.g. re-rendering after settings are applied).
``before_generate(fn)``
    ``fn(ctx, request) -> GenerateHook | None`` before every generation, under the device lock: may return a
    changed request (``dataclasses.replace``) and messages to show the user.
``after_generate(fn)``
    ``fn(ctx, request, result)`` after every generation, still under the device lock.
``app_started(fn)``
    ``fn(ctx, fastapi_app)`` once the FastAPI app exists and before Gradio is mounted on it (so routes
    added here take precedence over Gradio's catch-all), e.g. a REST API.

A callback that raises while the page is built is reported on the console and skipped, so one broken
script does not take the page down; a ``before_generate`` hook that raises fails that generation with
its message.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class UiTab:
    """A tab a script adds: ``build(ctx, ui)`` creates its components inside ``gr.Tab(title, id=elem_id)``."""

    title: str
    elem_id: str
    build: Callable[[Any, Any], None]


@dataclasses.dataclass(frozen=True)
class SettingSpec:
    """One setting: AUTOMATIC1111's option key, its default and how the Settings tab edits it.

    ``component`` is one of ``"slider"``, ``"number"``, ``"checkbox"``, ``"dropdown"``, ``"text"``;
    ``choices`` (for dropdowns) is a list or a function of the state returning one, called when the tab
    is built and on refresh; ``minimum``/``maximum``/``step`` are for sliders and numbers.
    """

    key: str
    default: Any
    label: str
    section: str = "Other"
    component: str = "text"
    choices: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str | None = None

    def coerce(self, value: Any) -> Any:
        """``value`` converted to this setting's type; ``ValueError`` with a message when it cannot be."""
        if self.component in ("slider", "number"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.label}: {value!r} is not a number") from None
            if self.minimum is not None and number < self.minimum or self.maximum is not None and number > self.maximum:
                raise ValueError(f"{self.label}: {number:g} is outside {self.minimum:g}..{self.maximum:g}")
            return int(number) if isinstance(self.default, int) and not isinstance(self.default, bool) else number
        if self.component == "checkbox":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        return "" if value is None else str(value)


@dataclasses.dataclass
class GenerateHook:
    """What a ``before_generate`` callback returns: a replacement request and/or messages for the user."""

    request: Any = None
    messages: list[str] = dataclasses.field(default_factory=list)


class Script:
    """Base class of a txt2img script (AUTOMATIC1111's ``scripts.Script``, reduced to what is used here)."""

    def title(self) -> str:
        raise NotImplementedError

    def elem_id(self, name: str) -> str:
        slug = "".join(c if c.isalnum() else "_" for c in self.title().lower()).strip("_")
        return f"script_{slug}_{name}"

    def ui(self, ctx, ui) -> list:
        """Create the script's components (inside a group the host shows only when the script is chosen)."""
        return []

    def run(self, ctx, request, *values, progress=None):
        """Generate in place of plain txt2img; return a :class:`extension.processing.Txt2ImgResult`."""
        raise NotImplementedError

    def api_args(self, ctx) -> list[dict]:
        """What ``script_args`` the API takes, in order (``/sdapi/v1/script-info``): AUTOMATIC1111's ``label``,
        ``value``, ``minimum``, ``maximum``, ``step``, ``choices``. By default the names of :meth:`run`'s
        values; a script whose components say more overrides it."""
        import inspect

        skip = {"self", "ctx", "request", "progress"}
        return [{"label": name, "value": None if param.default is inspect.Parameter.empty else param.default}
                for name, param in inspect.signature(self.run).parameters.items()
                if name not in skip and param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)]


class Callbacks:
    """The registry a script's ``register(callbacks)`` fills. One per app; see the module docstring."""

    HOOKS = ("settings", "model_loaded", "extra_networks_tabs", "ui_tabs", "ui_loaded", "before_generate",
             "after_generate", "app_started")

    def __init__(self) -> None:
        self._hooks: dict[str, list[tuple[str, Callable]]] = {name: [] for name in self.HOOKS}
        self.scripts: list[Script] = []
        self.loaded: list[str] = []  # script files loaded
        self.errors: list[str] = []  # script files that failed, with their error

    # -- registration (called by scripts) -------------------------------------------------------------------
    def _add(self, hook: str, fn: Callable) -> Callable:
        self._hooks[hook].append((getattr(fn, "__module__", "?"), fn))
        return fn

    def on_settings(self, fn): return self._add("settings", fn)
    def on_model_loaded(self, fn): return self._add("model_loaded", fn)
    def on_extra_networks_tabs(self, fn): return self._add("extra_networks_tabs", fn)
    def on_ui_tabs(self, fn): return self._add("ui_tabs", fn)
    def on_ui_loaded(self, fn): return self._add("ui_loaded", fn)
    def on_before_generate(self, fn): return self._add("before_generate", fn)
    def on_after_generate(self, fn): return self._add("after_generate", fn)
    def on_app_started(self, fn): return self._add("app_started", fn)

    def add_txt2img_script(self, script: Script) -> Script:
        if any(s.title() == script.title() for s in self.scripts):
            raise ValueError(f"a txt2img script called {script.title()!r} is already registered")
        self.scripts.append(script)
        return script

    # -- calling (by the host) -------------------------------------------------------------------------------
    def callbacks(self, hook: str) -> list[Callable]:
        return [fn for _, fn in self._hooks[hook]]

    def call_each(self, hook: str, *args) -> list:
        """Call every ``hook`` callback; one that raises is logged and skipped. Returns the results."""
        results = []
        for module, fn in self._hooks[hook]:
            try:
                results.append(fn(*args))
            except Exception:  # noqa: BLE001 - a broken script must not take the page down
                log.error("script %s: %s callback failed:\n%s", module, hook, traceback.format_exc())
        return results

    def collect(self, hook: str, *args) -> list:
        """Call every ``hook`` callback and chain the iterables they return."""
        out = []
        for result in self.call_each(hook, *args):
            out.extend(result or ())
        return out

    def script(self, title: str) -> Script | None:
        return next((s for s in self.scripts if s.title() == title), None)


def load_scripts(callbacks: Callbacks, directory: Path) -> Callbacks:
    """Import every ``directory/*.py`` (name order) and call its ``register(callbacks)``.

    Each file is imported under a private module name, so loading the scripts twice (two apps in one
    process, or tests) gives independent modules. A file that fails to import or register is reported and
    skipped.
    """
    directory = Path(directory)
    for path in sorted(directory.glob("*.py")) if directory.is_dir() else []:
        if path.name.startswith("_"):
            continue
        module_name = f"_webui_scripts_{id(callbacks):x}_{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
            register = getattr(module, "register", None)
            if register is None:
                raise AttributeError("it defines no register(callbacks) function")
            register(callbacks)
            callbacks.loaded.append(path.name)
        except Exception as exc:  # noqa: BLE001
            sys.modules.pop(module_name, None)
            callbacks.errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
            log.error("script %s failed to load:\n%s", path, traceback.format_exc())
    return callbacks


def collect_settings(callbacks: Callbacks, ctx) -> Iterable[SettingSpec]:
    return callbacks.collect("settings", ctx)
