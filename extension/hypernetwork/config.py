"""``HypernetworkConfig``: the structure of a hypernetwork, its defaults and its checks, in one place.

In the spirit of PEFT's ``LoraConfig``: a validated, frozen dataclass. Everything that decides how a
network is built reads it: which attention widths have modules (``sizes``), the layer structure, the
activation, the weight init, layer norm, dropout and ``activate_output``. It converts to and from the
metadata AUTOMATIC1111 stores in its files (:meth:`to_metadata`, :meth:`from_metadata`, with its defaults for
files that lack a key), and it describes the layout of each module's ``torch.nn.Sequential`` (:meth:`layout`),
whose indices are the state-dict keys, so a file's weights can be checked without building anything
(:meth:`check_weights`).

The layout, exactly as AUTOMATIC1111 builds it: for each step ``i`` of ``layer_structure`` a Linear from
``int(dim * ls[i])`` to ``int(dim * ls[i+1])``, then the activation (skipped on the last Linear unless
``activate_output``), then LayerNorm (if ``add_layer_norm``), then Dropout (if ``dropout_structure[i+1] > 0``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import warnings
from typing import Any, Mapping

import torch

from ..errors import HypernetworkError

WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
LINEAR = "linear"

# AUTOMATIC1111's explicit names; "swish" is Hardswish there, not SiLU.
_NAMED_ACTIVATIONS = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}
# Hidden in AUTOMATIC1111's UI (they still load from files).
UI_HIDDEN_ACTIVATIONS = ("hardswish", "multiheadattention")


@functools.cache
def _activation_table() -> Mapping[str, type[torch.nn.Module]]:
    import torch.nn.modules.activation as activation_module

    classes = dict(_NAMED_ACTIVATIONS)
    probe = torch.zeros(2, 3, 8)
    for cls_name in dir(activation_module):
        cls = getattr(activation_module, cls_name)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            continue
        if cls.__module__ != activation_module.__name__ or cls_name.lower() in classes:
            continue
        try:  # the probe must not draw from the global random generator (RReLU does)
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
                warnings.simplefilter("ignore")
                keeps_width = cls()(probe).shape == probe.shape
        except Exception:
            keeps_width = False
        if keeps_width:
            classes[cls_name.lower()] = cls
    return types.MappingProxyType(classes)


def activation_classes() -> Mapping[str, type[torch.nn.Module]]:
    """Every activation name a hypernetwork may use, mapped to its ``torch.nn`` class (read-only).

    AUTOMATIC1111 adds every class of ``torch.nn.modules.activation`` by lower-cased name. Of those we keep
    the ones that build without arguments and keep the width (so ``threshold``, ``multiheadattention`` and
    ``glu`` are left out: files using them could never have loaded). Computed once per process.
    """
    return _activation_table()


def ui_activations() -> list[str]:
    """The activation names a Create form offers: AUTOMATIC1111's list, minus what cannot build."""
    return [name for name in activation_classes() if name not in UI_HIDDEN_ACTIVATIONS]


def parse_dropout_structure(layer_structure, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """Dropout per layer for files that store none (AUTOMATIC1111's pre-2023 fixed 0.3 rule).

    Args:
        layer_structure: the layer structure (None means ``[1, 2, 1]``).
        use_dropout: AUTOMATIC1111's "Use dropout".
        last_layer_dropout: whether the layer before the output gets dropout too.

    Returns:
        One probability per entry of ``layer_structure``: 0.3 on the hidden layers (and on the last one with
        ``last_layer_dropout``), 0 on the input and output; all zeros without ``use_dropout``.
    """
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    return [0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0] + [0]


def fix_old_state_dict(state_dict: Mapping) -> dict:
    """Rename the NovelAI / October 2022 keys ``linear1.*``, ``linear2.*`` to ``linear.0.*``, ``linear.1.*``.

    Args:
        state_dict: one module's state dict, as a file stores it.

    Returns:
        A new dict with the old keys renamed and every other key as it was.
    """
    renames = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
               "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}
    return {renames.get(key, key): value for key, value in state_dict.items()}


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One entry of a module's ``Sequential``: ``kind`` is ``linear``, ``activation``, ``norm`` or ``dropout``.

    Args:
        kind: ``"linear"``, ``"activation"``, ``"norm"`` or ``"dropout"``.
        in_features: a Linear's input width.
        out_features: a Linear's output width, or a LayerNorm's width.
        activation: an activation's name (a key of :func:`activation_classes`).
        p: a Dropout's probability.
    """

    kind: str
    in_features: int = 0
    out_features: int = 0
    activation: str | None = None
    p: float = 0.0

    def build(self) -> torch.nn.Module:
        if self.kind == "linear":
            return torch.nn.Linear(self.in_features, self.out_features)
        if self.kind == "activation":
            return activation_classes()[self.activation]()
        if self.kind == "norm":
            return torch.nn.LayerNorm(self.out_features)
        return torch.nn.Dropout(p=self.p)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind == "linear":
            return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}
        if self.kind == "norm":
            return {"weight": (self.out_features,), "bias": (self.out_features,)}
        if self.kind == "activation" and self.activation == "prelu":
            return {"weight": (1,)}
        return {}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value, what: str) -> tuple:
    if isinstance(value, str):
        try:
            value = [float(part) for part in value.replace(" ", "").split(",") if part]
        except ValueError:
            raise HypernetworkError(f"{what} {value!r} is not a comma-separated list of numbers") from None
    try:
        items = tuple(value)
    except TypeError:
        raise HypernetworkError(f"{what} must be a list of numbers, got {value!r}") from None
    if not all(_is_number(x) for x in items):
        raise HypernetworkError(f"{what} must hold finite numbers only, got {list(items)}")
    return items


@dataclasses.dataclass(frozen=True)
class HypernetworkConfig:
    """How a hypernetwork is built. Invalid values raise :class:`~extension.errors.HypernetworkError`.

    Args:
        sizes: the attention widths that get a (K, V) module pair, e.g. ``(768, 320, 640, 1280)``.
        layer_structure: width multipliers of the MLP, first and last 1 (``"1, 2, 1"`` strings accepted).
        activation_func: a name from :func:`activation_classes`; ``None`` or ``"linear"`` for none.
        weight_init: one of :data:`WEIGHT_INITS` (``None`` means ``"Normal"``).
        add_layer_norm: LayerNorm after every Linear.
        use_dropout: AUTOMATIC1111's "Use dropout" flag (stored in files).
        dropout_structure: dropout probability per entry of ``layer_structure``, each in ``[0, 1)``; when
            ``None`` it is derived from ``use_dropout`` and ``last_layer_dropout`` (AUTOMATIC1111's rule).
        last_layer_dropout: only used to derive a missing ``dropout_structure``.
        activate_output: the activation also follows the last Linear.
    """

    sizes: tuple[int, ...] = ()
    layer_structure: tuple[float, ...] = (1, 2, 1)
    activation_func: str | None = None
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: tuple[float, ...] | None = None
    last_layer_dropout: bool = True
    activate_output: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        sizes: list[int] = []
        raw = self.sizes.split(",") if isinstance(self.sizes, str) else (self.sizes or ())
        for size in raw:
            value = size.strip() if isinstance(size, str) else size
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if not _is_number(value) or value != int(value) or value <= 0:
                raise HypernetworkError(f"attention width {size!r} is not a positive whole number")
            if int(value) not in sizes:
                sizes.append(int(value))
        set_("sizes", tuple(sizes))
        ls = _numbers(self.layer_structure if self.layer_structure is not None else (1, 2, 1), "layer structure")
        if len(ls) < 2:
            raise HypernetworkError(f"layer structure must list at least two sizes, got {list(ls)}")
        if ls[0] != 1:
            raise HypernetworkError(f"Multiplier Sequence should start with size 1! (layer structure {list(ls)})")
        if ls[-1] != 1:
            raise HypernetworkError(f"Multiplier Sequence should end with size 1! (layer structure {list(ls)})")
        if any(x <= 0 for x in ls):
            raise HypernetworkError(f"layer structure sizes must be positive numbers, got {list(ls)}")
        set_("layer_structure", ls)
        if self.activation_func is not None:
            if not isinstance(self.activation_func, str):
                raise HypernetworkError(f"malformed activation_func {self.activation_func!r}")
            if self.activation_func not in activation_classes():
                raise HypernetworkError(f"hypernetwork uses an unsupported activation function: "
                                        f"{self.activation_func}")
        weight_init = self.weight_init or "Normal"
        if weight_init not in WEIGHT_INITS:
            raise HypernetworkError(f"Key {weight_init} is not defined as initialization! "
                                    f"(choose one of {', '.join(WEIGHT_INITS)})")
        set_("weight_init", weight_init)
        for flag in ("add_layer_norm", "use_dropout", "last_layer_dropout", "activate_output"):
            if not isinstance(getattr(self, flag), (bool, int)):
                raise HypernetworkError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
            set_(flag, bool(getattr(self, flag)))
        dropout = self.dropout_structure
        if dropout is None:
            dropout = parse_dropout_structure(ls, self.use_dropout, self.last_layer_dropout)
        dropout = _numbers(dropout, "dropout structure")
        if len(dropout) != len(ls):
            raise HypernetworkError(f"dropout structure {list(dropout)} must have as many entries as "
                                    f"layer structure {list(ls)}")
        if any(not 0 <= p < 1 for p in dropout):
            raise HypernetworkError(f"dropout probabilities must lie in [0, 1), got {list(dropout)}")
        set_("dropout_structure", dropout)

    # -- files -----------------------------------------------------------------------------------------------
    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], sizes=()) -> "HypernetworkConfig":
        """The config a file's metadata describes, with AUTOMATIC1111's defaults for missing keys.

        Defaults (``Hypernetwork.load`` upstream): ``layer_structure`` ``[1, 2, 1]``, ``activation_func``
        None (linear), ``weight_initialization`` Normal, ``is_layer_norm`` False, ``activate_output`` **True**,
        ``last_layer_dropout`` **False**; ``use_dropout`` is true when the dropout structure has a non-zero
        entry, else the stored flag; a missing ``dropout_structure`` is derived from those.

        Args:
            metadata: the file's string keys (``layer_structure``, ``activation_func``, ``is_layer_norm``...).
            sizes: the attention widths the file has weights for.

        Raises:
            HypernetworkError: malformed metadata or a structure AUTOMATIC1111 could never have built.
        """
        dropout = metadata.get("dropout_structure")
        try:
            use_dropout = bool(dropout is not None and any(dropout)) or bool(metadata.get("use_dropout", False))
        except TypeError:
            raise HypernetworkError(f"malformed metadata: dropout_structure {dropout!r}") from None
        return cls(
            sizes=tuple(sizes),
            layer_structure=metadata.get("layer_structure") or (1, 2, 1),
            activation_func=metadata.get("activation_func"),
            weight_init=metadata.get("weight_initialization", "Normal"),
            add_layer_norm=metadata.get("is_layer_norm", False),
            use_dropout=use_dropout,
            dropout_structure=dropout,
            last_layer_dropout=metadata.get("last_layer_dropout", False),
            activate_output=metadata.get("activate_output", True),
        )

    def to_metadata(self) -> dict[str, Any]:
        """The structure keys of AUTOMATIC1111's file format, as its ``save`` writes them."""
        return {
            "layer_structure": list(self.layer_structure),
            "activation_func": self.activation_func,
            "is_layer_norm": self.add_layer_norm,
            "weight_initialization": self.weight_init,
            "activate_output": self.activate_output,
            "use_dropout": self.use_dropout,
            "dropout_structure": list(self.dropout_structure),
            "last_layer_dropout": self.dropout_structure[-2] != 0,
        }

    def replace(self, **changes) -> "HypernetworkConfig":
        """A copy with ``changes`` (validated again).

        Args:
            **changes: field names and their new values.
        """
        return dataclasses.replace(self, **changes)

    # -- structure --------------------------------------------------------------------------------------------
    @property
    def is_affine(self) -> bool:
        """True when every module is an affine map of its input at inference (no activation, no layer norm;
        dropout is off then): ``x -> x + m * (W_n ... (W_1 x + b_1) ... + b_n)``."""
        return self.activation_func in (None, LINEAR) and not self.add_layer_norm

    def layout(self, dim: int) -> tuple[LayerSpec, ...]:
        """The entries of one module's ``Sequential`` for attention width ``dim``, in order.

        Args:
            dim: the attention width (the module's input and output width).

        Returns:
            One :class:`LayerSpec` per ``Sequential`` entry; its index is the ``linear.N`` of the state dict.
        """
        ls = self.layer_structure
        layers: list[LayerSpec] = []
        for i in range(len(ls) - 1):
            width_in, width_out = int(dim * ls[i]), int(dim * ls[i + 1])
            layers.append(LayerSpec("linear", width_in, width_out))
            if self.activation_func not in (None, LINEAR) and (i < len(ls) - 2 or self.activate_output):
                layers.append(LayerSpec("activation", activation=self.activation_func))
            if self.add_layer_norm:
                layers.append(LayerSpec("norm", out_features=width_out))
            if self.dropout_structure[i + 1] > 0:
                layers.append(LayerSpec("dropout", p=float(self.dropout_structure[i + 1])))
        return tuple(layers)

    def parameter_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        """``{"linear.N.weight": shape, ...}``: the state dict one module for width ``dim`` has.

        Args:
            dim: the attention width.
        """
        return {f"linear.{index}.{name}": shape for index, spec in enumerate(self.layout(dim))
                for name, shape in spec.parameter_shapes().items()}

    def check_weights(self, dim: int, state_dict: Mapping) -> dict[str, torch.Tensor]:
        """``state_dict`` of one module (old key names fixed), checked against the layout for ``dim``.

        Args:
            dim: the attention width the module is for.
            state_dict: the module's weights as a file stores them (``linear.N.*``, ``N.*`` or NovelAI's names).

        Returns:
            The weights keyed ``linear.N.weight`` / ``linear.N.bias``, as given (not copied or converted).

        Raises:
            HypernetworkError: missing or unexpected keys, wrong shapes, non-float, NaN or inf values (the values
                of meta tensors, read for a listing without their data, are not checked).
        """
        state = fix_old_state_dict(state_dict)
        state = {key if key.startswith("linear.") else f"linear.{key}": value for key, value in state.items()}
        expected = self.parameter_shapes(dim)
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise HypernetworkError(f"weights for width {dim} do not fit the layout the metadata describes "
                                    f"(missing {missing}, unexpected {unexpected})")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise HypernetworkError(f"weight {key} for width {dim} is not a tensor")
            if tuple(value.shape) != expected[key]:
                raise HypernetworkError(f"weight {key} for width {dim} has shape {tuple(value.shape)}, "
                                        f"the layout needs {expected[key]}")
            if not value.is_floating_point() or (not value.is_meta and not torch.isfinite(value).all()):
                raise HypernetworkError(f"weight {key} for width {dim} holds NaN, inf or non-float values")
        return state

    def parameter_count(self) -> int:
        """Parameters of the whole network (two modules per size)."""
        return 2 * sum(math.prod(shape) for dim in self.sizes for shape in self.parameter_shapes(dim).values())
