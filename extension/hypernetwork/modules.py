"""The hypernetwork itself: AUTOMATIC1111's ``HypernetworkModule`` and ``Hypernetwork``, exactly.

A hypernetwork holds, for each enabled attention width ``dim``, a pair of residual MLPs
``(K module, V module)``. Each maps a context ``x`` of width ``dim`` to ``x + f(x) * multiplier``;
the K module's output feeds the attention's ``to_k`` and the V module's ``to_v``.

The layout of ``f`` (a ``torch.nn.Sequential`` named ``linear``) is rebuilt exactly as AUTOMATIC1111
builds it, because its state-dict keys are the Sequential's indices: for each step ``i`` of
``layer_structure`` a Linear, then the activation (skipped on the last Linear unless
``activate_output``), then LayerNorm (if ``add_layer_norm``), then Dropout (if
``dropout_structure[i+1] > 0``).

File reading and writing live in :mod:`extension.hypernetwork.files`; this module only builds and runs.
"""
from __future__ import annotations

import copy
import functools
import os
from typing import Iterable, Sequence

import torch

from ..errors import HypernetworkError

WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")

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


@functools.cache
def activation_classes() -> dict[str, type[torch.nn.Module]]:
    """Every activation name a hypernetwork may use, mapped to its ``torch.nn`` class.

    AUTOMATIC1111 adds every class of ``torch.nn.modules.activation`` by lower-cased name. Of those we
    keep the ones that build without arguments and keep the width (so ``threshold``,
    ``multiheadattention`` and ``glu`` are left out: files using them could never have loaded).
    Computed once; the result depends only on the installed torch.
    """
    import torch.nn.modules.activation as activation_module

    classes = dict(_NAMED_ACTIVATIONS)
    probe = torch.zeros(2, 3, 8)
    for cls_name in dir(activation_module):
        cls = getattr(activation_module, cls_name)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            continue
        if cls.__module__ != activation_module.__name__ or cls_name.lower() in classes:
            continue
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                keeps_width = cls()(probe).shape == probe.shape
        except Exception:
            keeps_width = False
        if keeps_width:
            classes[cls_name.lower()] = cls
    return classes


def parse_dropout_structure(layer_structure, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """Dropout per layer for files that store none (AUTOMATIC1111's pre-2023 fixed 0.3 rule)."""
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    return [0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0] + [0]


def validate_structure(layer_structure, dropout_structure=None, activation_func=None) -> None:
    """Raise :class:`HypernetworkError` for a structure AUTOMATIC1111 could never have built."""
    if layer_structure is None or len(layer_structure) < 2:
        raise HypernetworkError(f"layer structure must list at least two sizes, got {layer_structure!r}")
    if layer_structure[0] != 1:
        raise HypernetworkError(f"Multiplier Sequence should start with size 1! (layer structure {list(layer_structure)})")
    if layer_structure[-1] != 1:
        raise HypernetworkError(f"Multiplier Sequence should end with size 1! (layer structure {list(layer_structure)})")
    if any(not isinstance(x, (int, float)) or x <= 0 for x in layer_structure):
        raise HypernetworkError(f"layer structure sizes must be positive numbers, got {list(layer_structure)}")
    if dropout_structure is not None:
        if len(dropout_structure) != len(layer_structure):
            raise HypernetworkError(
                f"dropout structure {list(dropout_structure)} must have as many entries as "
                f"layer structure {list(layer_structure)}"
            )
        if any(not isinstance(p, (int, float)) or not 0 <= p < 1 for p in dropout_structure):
            raise HypernetworkError(f"dropout probabilities must lie in [0, 1), got {list(dropout_structure)}")
    if activation_func is not None and activation_func not in activation_classes():
        raise HypernetworkError(f"hypernetwork uses an unsupported activation function: {activation_func}")


def fix_old_state_dict(state_dict: dict) -> dict:
    """Rename the NovelAI / October 2022 keys ``linear1.*``, ``linear2.*`` to ``linear.0.*``, ``linear.1.*``."""
    renames = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
               "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}
    return {renames.get(key, key): value for key, value in state_dict.items()}


class HypernetworkModule(torch.nn.Module):
    """One residual MLP: ``forward(x) = x + linear(x) * multiplier`` (multiplier 1 while training)."""

    def __init__(self, dim, state_dict=None, layer_structure=None, activation_func=None, weight_init="Normal",
                 add_layer_norm=False, activate_output=False, dropout_structure=None):
        super().__init__()
        self.multiplier = 1.0
        validate_structure(layer_structure, dropout_structure, activation_func)
        classes = activation_classes()
        layers: list[torch.nn.Module] = []
        for i in range(len(layer_structure) - 1):
            layers.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if activation_func not in (None, "linear") and (i < len(layer_structure) - 2 or activate_output):
                layers.append(classes[activation_func]())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*layers)

        if state_dict is not None:
            self._load_weights(fix_old_state_dict(state_dict), dim)
        else:
            self._initialize(weight_init, activation_func)

    def _load_weights(self, state_dict: dict, dim: int) -> None:
        expected = self.linear.state_dict()
        prefixed = {key.removeprefix("linear."): value for key, value in state_dict.items()}
        missing = sorted(set(expected) - set(prefixed))
        unexpected = sorted(set(prefixed) - set(expected))
        if missing or unexpected:
            raise HypernetworkError(
                f"weights for width {dim} do not fit the layout the metadata describes "
                f"(missing {['linear.' + k for k in missing]}, unexpected {['linear.' + k for k in unexpected]})"
            )
        for key, value in prefixed.items():
            if not isinstance(value, torch.Tensor):
                raise HypernetworkError(f"weight linear.{key} for width {dim} is not a tensor")
            if tuple(value.shape) != tuple(expected[key].shape):
                raise HypernetworkError(
                    f"weight linear.{key} for width {dim} has shape {tuple(value.shape)}, "
                    f"the layout needs {tuple(expected[key].shape)}"
                )
            if not value.is_floating_point() or not torch.isfinite(value).all():
                raise HypernetworkError(f"weight linear.{key} for width {dim} holds NaN, inf or non-float values")
        self.linear.load_state_dict({key: value.float() for key, value in prefixed.items()}, strict=True)

    def _initialize(self, weight_init, activation_func) -> None:
        """AUTOMATIC1111's init, LayerNorm included (its gain gets N(0, 0.01) too, as there)."""
        weight_init = weight_init or "Normal"
        if weight_init not in WEIGHT_INITS:
            raise HypernetworkError(f"Key {weight_init} is not defined as initialization! (choose one of {WEIGHT_INITS})")
        nonlinearity = "leaky_relu" if activation_func == "leakyrelu" else "relu"
        for layer in self.linear:
            if not isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                continue
            w, b = layer.weight.data, layer.bias.data
            if weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                torch.nn.init.normal_(w, mean=0.0, std=0.01)
                torch.nn.init.normal_(b, mean=0.0, std=0)
            elif weight_init == "XavierUniform":
                torch.nn.init.xavier_uniform_(w)
                torch.nn.init.zeros_(b)
            elif weight_init == "XavierNormal":
                torch.nn.init.xavier_normal_(w)
                torch.nn.init.zeros_(b)
            elif weight_init == "KaimingUniform":
                torch.nn.init.kaiming_uniform_(w, nonlinearity=nonlinearity)
                torch.nn.init.zeros_(b)
            else:
                torch.nn.init.kaiming_normal_(w, nonlinearity=nonlinearity)
                torch.nn.init.zeros_(b)

    def forward(self, x: torch.Tensor, multiplier: float | None = None) -> torch.Tensor:
        """``x + f(x) * m``; ``m`` is ``multiplier`` when given (per call, thread-safe), else ``self.multiplier``.

        In training mode the multiplier is 1, as in AUTOMATIC1111. A multiplier of exactly 0 returns ``x``
        itself without computing ``f``.
        """
        m = 1.0 if self.training else (self.multiplier if multiplier is None else multiplier)
        if m == 0:
            return x
        # Each layer with weights runs in its weights' dtype: fp32 throughout for AUTOMATIC1111's fp32 weights;
        # with ``Hypernetwork.for_inference``'s half copies (half Linear, fp32 LayerNorm) exactly what autocast
        # computes in AUTOMATIC1111 on a half-precision model, without autocast's per-call weight casts.
        h = x
        for layer in self.linear:
            weight = getattr(layer, "weight", None)
            if weight is not None and h.dtype != weight.dtype:
                h = h.to(weight.dtype)
            h = layer(h)
        return x + h.to(x.dtype) * m

    def trainables(self) -> list[torch.Tensor]:
        return [p for layer in self.linear if isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm))
                for p in (layer.weight, layer.bias)]


class Hypernetwork:
    """A named set of ``(K, V)`` module pairs keyed by attention width, with AUTOMATIC1111's metadata."""

    filename = None
    name = None

    def __init__(self, name=None, enable_sizes=None, layer_structure=None, activation_func=None, weight_init=None,
                 add_layer_norm=False, use_dropout=False, activate_output=False, **kwargs):
        self.filename = None
        self.name = name
        self.layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
        self.step = 0
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None
        self.layer_structure = list(layer_structure) if layer_structure is not None else [1, 2, 1]
        self.activation_func = activation_func
        self.weight_init = weight_init or "Normal"
        self.add_layer_norm = add_layer_norm
        self.use_dropout = use_dropout
        self.activate_output = activate_output
        self.last_layer_dropout = kwargs.get("last_layer_dropout", True)
        self.dropout_structure = kwargs.get("dropout_structure")
        if self.dropout_structure is None:
            self.dropout_structure = parse_dropout_structure(self.layer_structure, self.use_dropout,
                                                             self.last_layer_dropout)
        self.optimizer_name = None
        self.optimizer_state_dict = None
        self.optional_info = None
        self.sha256: str | None = None  # of the file loaded or saved, when known
        self._inference_copies: dict[tuple, "Hypernetwork"] = {}
        self._shorthash: str | None = None

        validate_structure(self.layer_structure, self.dropout_structure, self.activation_func)
        for size in enable_sizes or []:
            self.layers[int(size)] = (self._module(int(size)), self._module(int(size)))
        self.eval()

    def _module(self, dim: int, state_dict=None) -> HypernetworkModule:
        return HypernetworkModule(dim, state_dict, self.layer_structure, self.activation_func, self.weight_init,
                                  self.add_layer_norm, self.activate_output, dropout_structure=self.dropout_structure)

    # -- AUTOMATIC1111's methods -------------------------------------------------------------------------
    def weights(self) -> list[torch.Tensor]:
        return [p for pair in self.layers.values() for module in pair for p in module.parameters()]

    def train(self, mode: bool = True) -> "Hypernetwork":
        for pair in self.layers.values():
            for module in pair:
                module.train(mode=mode)
                for param in module.parameters():
                    param.requires_grad = mode
        return self

    def eval(self) -> "Hypernetwork":
        return self.train(False)

    def to(self, device=None, dtype=None) -> "Hypernetwork":
        for pair in self.layers.values():
            for module in pair:
                module.to(device=device, dtype=dtype)
        return self

    def for_inference(self, device, dtype: torch.dtype = torch.float32) -> "Hypernetwork":
        """This network ready to run beside a model on ``device`` in ``dtype``; this object is not changed.

        On CPU, or with an fp32 model, the weights are fp32 (as AUTOMATIC1111 keeps them). On CUDA with a
        half-precision model the Linear weights are copied to that precision once (LayerNorm stays fp32): the
        matmuls autocast runs in AUTOMATIC1111, from weights cast once instead of at every call. Copies are kept, and made
        afresh when this network's weights have changed since (training).
        """
        device = torch.device(device)
        half = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        params = self.weights()
        if not half and all(p.device == device and p.dtype == torch.float32 for p in params):
            return self
        key = (str(device), dtype if half else torch.float32)
        versions = tuple(p._version for p in params)
        cached = self._inference_copies.get(key)
        if cached is not None and cached[0] == versions:
            return cached[1]
        clone = copy.copy(self)
        clone._inference_copies = {}
        clone.layers = {size: tuple(copy.deepcopy(module).to(device) for module in pair)
                        for size, pair in self.layers.items()}
        if half:
            for pair in clone.layers.values():
                for module in pair:
                    for layer in module.linear:
                        if isinstance(layer, torch.nn.Linear):
                            layer.to(dtype)
        clone.eval()
        self._inference_copies[key] = (versions, clone)
        return clone

    def set_multiplier(self, multiplier: float) -> "Hypernetwork":
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self

    def sizes(self) -> list[int]:
        return sorted(self.layers)

    def apply(self, context_k: torch.Tensor, context_v: torch.Tensor, multiplier: float | None = None):
        """Apply this network's modules for the context width; widths with no module pass through."""
        pair = self.layers.get(context_k.shape[-1])
        if pair is None:
            return context_k, context_v
        return pair[0](context_k, multiplier), pair[1](context_v, multiplier)

    def shorthash(self) -> str | None:
        """First 10 hex digits of the sha256 of the file this network was loaded from or saved to."""
        if self._shorthash is None and self.filename and os.path.exists(self.filename):
            from .files import sha256_file

            self.sha256 = sha256_file(self.filename)
            self._shorthash = self.sha256[:10]
        return self._shorthash

    def save(self, filename, optimizer_state_dict=None) -> None:
        """Write ``.safetensors`` or AUTOMATIC1111's ``.pt`` (chosen by extension); ``.optim`` beside it if given."""
        from .files import save_hypernetwork

        save_hypernetwork(self, filename, optimizer_state_dict=optimizer_state_dict)

    def load(self, filename) -> "Hypernetwork":
        from .files import load_hypernetwork_into

        return load_hypernetwork_into(self, filename)

    def metadata(self) -> dict:
        """The AUTOMATIC1111 metadata fields, as its ``.pt`` files store them."""
        return {
            "step": self.step,
            "name": self.name,
            "layer_structure": list(self.layer_structure),
            "activation_func": self.activation_func,
            "is_layer_norm": self.add_layer_norm,
            "weight_initialization": self.weight_init,
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "activate_output": self.activate_output,
            "use_dropout": self.use_dropout,
            "dropout_structure": list(self.dropout_structure) if self.dropout_structure is not None else None,
            "last_layer_dropout": (self.dropout_structure[-2] != 0) if self.dropout_structure is not None
            else self.last_layer_dropout,
            "optional_info": self.optional_info or None,
        }

    def __repr__(self) -> str:
        return (f"Hypernetwork(name={self.name!r}, sizes={self.sizes()}, layer_structure={self.layer_structure}, "
                f"activation_func={self.activation_func!r}, step={self.step})")


def apply_hypernetworks(networks: Iterable[tuple[Hypernetwork, float]], context: torch.Tensor):
    """Chain several networks in order, K into K and V into V (AUTOMATIC1111's ``apply_hypernetworks``)."""
    context_k = context_v = context
    for network, multiplier in networks:
        context_k, context_v = network.apply(context_k, context_v, multiplier)
    return context_k, context_v


def enabled_sizes(networks: Sequence[Hypernetwork]) -> set[int]:
    return {size for network in networks for size in network.layers}
