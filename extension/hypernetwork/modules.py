"""The hypernetwork itself: AUTOMATIC1111's ``HypernetworkModule`` and ``Hypernetwork``, exactly.

A hypernetwork holds, for each enabled attention width ``dim``, a pair of residual MLPs
``(K module, V module)``. Each maps a context ``x`` of width ``dim`` to ``x + f(x) * multiplier``;
the K module's output feeds the attention's ``to_k`` and the V module's ``to_v``. How ``f`` is built is the
:class:`~extension.hypernetwork.config.HypernetworkConfig`'s business; the constructors keep AUTOMATIC1111's
signatures on top of it.

Files are read and written by :mod:`extension.hypernetwork.files` (this module calls it; it never calls here).
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Iterable

import torch

from ..errors import HypernetworkError
from ..fileio import sha256_file
from . import files
from .config import WEIGHT_INITS, HypernetworkConfig
from .folding import AffineMemo, version_of


class HypernetworkModule(torch.nn.Module):
    """One residual MLP: ``forward(x) = x + linear(x) * multiplier`` (multiplier 1 while training).

    AUTOMATIC1111's signature. ``layer_structure`` is required, as there; ``dropout_structure=None`` means no
    dropout. :meth:`from_config` builds one from a :class:`HypernetworkConfig`.

    Args:
        dim: the attention width the module acts on (its input and output width).
        state_dict: weights to load (checked against the layout), or None for AUTOMATIC1111's initialisation.
        layer_structure: width multipliers, first and last 1 (e.g. ``[1, 2, 1]``).
        activation_func: an activation name (:func:`~extension.hypernetwork.config.activation_classes`), or None.
        weight_init: one of :data:`~extension.hypernetwork.config.WEIGHT_INITS`.
        add_layer_norm: LayerNorm after every Linear.
        activate_output: the activation also follows the last Linear.
        dropout_structure: dropout probability per layer-structure entry, or None for none.

    Raises:
        HypernetworkError: a structure that cannot be built, or weights that do not fit it.
    """

    def __init__(self, dim, state_dict=None, layer_structure=None, activation_func=None, weight_init="Normal",
                 add_layer_norm=False, activate_output=False, dropout_structure=None):
        super().__init__()
        if layer_structure is None:
            raise HypernetworkError("a HypernetworkModule needs a layer structure, e.g. [1, 2, 1]")
        config = HypernetworkConfig(
            layer_structure=layer_structure, activation_func=activation_func, weight_init=weight_init,
            add_layer_norm=add_layer_norm, activate_output=activate_output,
            dropout_structure=dropout_structure if dropout_structure is not None else [0] * len(layer_structure))
        self._build(int(dim), config, state_dict)

    @classmethod
    def from_config(cls, dim: int, config: HypernetworkConfig, state_dict=None) -> "HypernetworkModule":
        """The module for width ``dim`` that ``config`` describes, with ``state_dict``'s weights or fresh ones.

        Args:
            dim: the attention width.
            config: the network's structure.
            state_dict: weights to load (checked against ``config.layout(dim)``), or None to initialise.
        """
        module = cls.__new__(cls)
        torch.nn.Module.__init__(module)
        module._build(int(dim), config, state_dict)
        return module

    def _build(self, dim: int, config: HypernetworkConfig, state_dict) -> None:
        self.multiplier = 1.0
        self.dim = dim
        self.config = config
        self.linear = torch.nn.Sequential(*(spec.build() for spec in config.layout(dim)))
        self.affine_memo = AffineMemo()  # the collapsed map of an affine module, for folding (see .folding)
        if state_dict is not None:
            weights = config.check_weights(dim, state_dict)
            self.linear.load_state_dict({key.removeprefix("linear."): value.float() for key, value in weights.items()},
                                        strict=True)
        else:
            self._initialize()

    def _initialize(self) -> None:
        """AUTOMATIC1111's init, LayerNorm included (its gain gets N(0, 0.01) too, as there)."""
        weight_init = self.config.weight_init
        assert weight_init in WEIGHT_INITS
        nonlinearity = "leaky_relu" if self.config.activation_func == "leakyrelu" else "relu"
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

        Args:
            x: ``(..., dim)``, the attention's context.
            multiplier: the strength for this call, or None for :attr:`multiplier`.
        """
        m = 1.0 if self.training else (self.multiplier if multiplier is None else multiplier)
        if m == 0:
            return x
        return x + self.residual(x).to(x.dtype) * m

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``, the MLP alone, in the dtype of its last layer with weights.

        Each layer with weights runs in its weights' dtype: fp32 throughout for AUTOMATIC1111's fp32 weights;
        with ``Hypernetwork.for_inference``'s half copies (half Linear, fp32 LayerNorm) exactly what autocast
        computes in AUTOMATIC1111 on a half-precision model, without autocast's per-call weight casts.

        Args:
            x: ``(..., dim)``, cast to each weighted layer's dtype as it goes.
        """
        h = x
        for layer in self.linear:
            weight = getattr(layer, "weight", None)
            if weight is not None and h.dtype != weight.dtype:
                h = h.to(weight.dtype)
            h = layer(h)
        return h

    def trainables(self) -> list[torch.Tensor]:
        return [p for layer in self.linear if isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm))
                for p in (layer.weight, layer.bias)]


class Hypernetwork:
    """A named set of ``(K, V)`` module pairs keyed by attention width, with AUTOMATIC1111's metadata.

    The constructor keeps AUTOMATIC1111's signature; ``last_layer_dropout`` and ``dropout_structure`` are its
    two extra keywords, and any other keyword is an error (AUTOMATIC1111 silently swallowed them). The
    structure is :attr:`config`; :meth:`from_config` builds from one directly.

    Args:
        name: the network's name (what ``<hypernet:NAME>`` calls it).
        enable_sizes: the attention widths that get a ``(K, V)`` module pair.
        layer_structure: width multipliers, first and last 1; None means ``[1, 2, 1]``.
        activation_func: an activation name, or None (``"linear"``) for none.
        weight_init: one of :data:`~extension.hypernetwork.config.WEIGHT_INITS`; None means ``"Normal"``.
        add_layer_norm: LayerNorm after every Linear.
        use_dropout: AUTOMATIC1111's "Use dropout" (derives a missing ``dropout_structure``).
        activate_output: the activation also follows the last Linear.
        last_layer_dropout: with ``use_dropout`` and no ``dropout_structure``, the last hidden layer gets
            dropout too.
        dropout_structure: dropout probability per layer-structure entry.

    Raises:
        HypernetworkError: a structure that cannot be built.
    """

    def __init__(self, name=None, enable_sizes=None, layer_structure=None, activation_func=None, weight_init=None,
                 add_layer_norm=False, use_dropout=False, activate_output=False, *, last_layer_dropout=True,
                 dropout_structure=None):
        config = HypernetworkConfig(
            sizes=tuple(enable_sizes or ()), layer_structure=layer_structure if layer_structure is not None
            else (1, 2, 1), activation_func=activation_func, weight_init=weight_init or "Normal",
            add_layer_norm=add_layer_norm, use_dropout=use_dropout, dropout_structure=dropout_structure,
            last_layer_dropout=last_layer_dropout, activate_output=activate_output)
        self._setup(name, config)
        for size in config.sizes:
            self.layers[size] = (HypernetworkModule.from_config(size, config),
                                 HypernetworkModule.from_config(size, config))
        self.eval()

    def _setup(self, name, config: HypernetworkConfig) -> None:
        self.config = config
        self.filename: str | None = None
        self.name = name
        self.layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
        self.step = 0
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None
        self.optimizer_name = None
        self.optimizer_state_dict = None
        self.optional_info = None
        self.sha256: str | None = None  # of the file loaded or saved, when known
        self._lock = threading.Lock()  # guards the caches below, which threads sharing this network fill
        self._inference_copies: dict[tuple, tuple[tuple, Hypernetwork]] = {}

    @classmethod
    def from_config(cls, config: HypernetworkConfig, name: str | None = None) -> "Hypernetwork":
        """A fresh network (AUTOMATIC1111's init) with the structure ``config`` describes.

        Args:
            config: the structure, widths included.
            name: the network's name.
        """
        hn = cls.__new__(cls)
        hn._setup(name, config)
        for size in config.sizes:
            hn.layers[size] = (HypernetworkModule.from_config(size, config),
                               HypernetworkModule.from_config(size, config))
        return hn.eval()

    @classmethod
    def from_state(cls, state: dict, path=None, name: str | None = None) -> "Hypernetwork":
        """Build from AUTOMATIC1111's dict (``{width: (K sd, V sd), "layer_structure": ..., ...}``), with its
        defaults for missing keys; every weight is checked against the structure the metadata describes.

        ``name`` (else the file's stem) is used when the file stores none.

        Args:
            state: AUTOMATIC1111's dict (:func:`extension.hypernetwork.files.read_state`).
            path: the file it was read from (named in errors, kept as :attr:`filename`), or None.
            name: the name to use when the file stores none.

        Raises:
            HypernetworkError: malformed metadata or weights that do not fit the structure, naming ``path``.
        """
        config, weights = files.checked_state(state, path)
        hn = cls.__new__(cls)
        hn._setup(name or (Path(path).stem if path is not None else None), config)
        hn.filename = str(path) if path is not None else None
        for size, (k, v) in weights.items():
            hn.layers[size] = (HypernetworkModule.from_config(size, config, k),
                               HypernetworkModule.from_config(size, config, v))
        metadata = files.metadata_of(state)
        hn.name = metadata.get("name") or hn.name
        try:
            hn.step = int(metadata.get("step") or 0)
        except (TypeError, ValueError):
            raise HypernetworkError(f"malformed metadata: step {metadata.get('step')!r}", path) from None
        hn.optional_info = metadata.get("optional_info")
        hn.sd_checkpoint = metadata.get("sd_checkpoint")
        hn.sd_checkpoint_name = metadata.get("sd_checkpoint_name")
        hn.optimizer_name = metadata.get("optimizer_name")
        return hn.eval()

    # -- the structure, as AUTOMATIC1111's attributes ---------------------------------------------------------
    @property
    def layer_structure(self) -> list[float]:
        return list(self.config.layer_structure)

    @property
    def activation_func(self) -> str | None:
        return self.config.activation_func

    @property
    def weight_init(self) -> str:
        return self.config.weight_init

    @property
    def add_layer_norm(self) -> bool:
        return self.config.add_layer_norm

    @property
    def use_dropout(self) -> bool:
        return self.config.use_dropout

    @property
    def activate_output(self) -> bool:
        return self.config.activate_output

    @property
    def dropout_structure(self) -> list[float]:
        return list(self.config.dropout_structure)

    @property
    def last_layer_dropout(self) -> bool:
        return self.config.dropout_structure[-2] != 0

    # -- AUTOMATIC1111's methods -------------------------------------------------------------------------
    def weights(self) -> list[torch.Tensor]:
        return [p for pair in self.layers.values() for module in pair for p in module.parameters()]

    def train(self, mode: bool = True) -> "Hypernetwork":
        """Put every module in training mode (gradients on, multiplier 1) or, with ``mode`` False, eval mode.

        Args:
            mode: True for training, False for inference (gradients off).

        Returns:
            This network.
        """
        for pair in self.layers.values():
            for module in pair:
                module.train(mode=mode)
                for param in module.parameters():
                    param.requires_grad = mode
        return self

    def eval(self) -> "Hypernetwork":
        return self.train(False)

    def to(self, device=None, dtype=None) -> "Hypernetwork":
        """Move every module in place (``torch.nn.Module.to``).

        Args:
            device: the target device, or None to stay.
            dtype: the target dtype, or None to stay.

        Returns:
            This network.
        """
        for pair in self.layers.values():
            for module in pair:
                module.to(device=device, dtype=dtype)
        return self

    def set_multiplier(self, multiplier: float) -> "Hypernetwork":
        """Set the default multiplier of every module (AUTOMATIC1111's way). Changes this object: for a network
        shared between requests pass the multiplier per call instead.

        Args:
            multiplier: the strength used by calls that pass none.

        Returns:
            This network.
        """
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self

    def sizes(self) -> list[int]:
        return sorted(self.layers)

    def apply(self, context_k: torch.Tensor, context_v: torch.Tensor, multiplier: float | None = None):
        """Apply this network's modules for the context width; widths with no module pass through.

        Args:
            context_k: the context ``to_k`` will read, ``(..., width)``.
            context_v: the context ``to_v`` will read, of the same width.
            multiplier: the strength for this call, or None for each module's own.

        Returns:
            ``(K context, V context)``.
        """
        pair = self.layers.get(context_k.shape[-1])
        if pair is None:
            return context_k, context_v
        return pair[0](context_k, multiplier), pair[1](context_v, multiplier)

    def shorthash(self) -> str | None:
        """First 10 hex digits of the sha256 of the file this network was loaded from or saved to."""
        with self._lock:
            if self.sha256 is None and self.filename and Path(self.filename).exists():
                self.sha256 = sha256_file(self.filename)
            return self.sha256[:10] if self.sha256 else None

    def save(self, filename, optimizer_state_dict=None) -> None:
        """Write ``.safetensors`` or AUTOMATIC1111's ``.pt`` (chosen by extension), atomically.

        Args:
            filename: the file to write; ``.pt`` files open in AUTOMATIC1111 1.8 and 1.10.
            optimizer_state_dict: when given, ``filename.optim`` is written beside it, stamped with the hash of
                the new file (so a resume from this very file finds it).
        """
        sha256 = files.write_state(self.to_state(), filename)
        with self._lock:
            self.filename, self.sha256 = str(filename), sha256
        if optimizer_state_dict:
            files.write_optimizer_state(filename, self.optimizer_name or "AdamW", sha256[:10], optimizer_state_dict)

    def load(self, filename) -> "Hypernetwork":
        """AUTOMATIC1111's ``Hypernetwork.load``: fill this object from the file (its stored name wins), and
        take the ``.optim`` sidecar's state when it was written for this very file.

        Args:
            filename: a ``.pt``, ``.ckpt`` or ``.safetensors`` hypernetwork file.

        Returns:
            This network.

        Raises:
            HypernetworkError: the file cannot be read or does not hold a valid hypernetwork, naming it.
        """
        state, sha256 = files.read_state(filename)
        loaded = Hypernetwork.from_state(state, filename, name=self.name)
        self.__dict__.update(loaded.__dict__)
        self.sha256 = sha256
        self.optimizer_state_dict = None
        saved = files.read_optimizer_state(filename, sha256[:10])
        if saved is not None:
            self.optimizer_name, self.optimizer_state_dict = saved
        else:
            self.optimizer_name = "AdamW"
        return self

    def metadata(self) -> dict:
        """The AUTOMATIC1111 metadata fields, as its ``.pt`` files store them."""
        structure = self.config.to_metadata()
        return {  # in the order AUTOMATIC1111's save writes them
            "step": self.step,
            "name": self.name,
            "layer_structure": structure["layer_structure"],
            "activation_func": structure["activation_func"],
            "is_layer_norm": structure["is_layer_norm"],
            "weight_initialization": structure["weight_initialization"],
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "activate_output": structure["activate_output"],
            "use_dropout": structure["use_dropout"],
            "dropout_structure": structure["dropout_structure"],
            "last_layer_dropout": structure["last_layer_dropout"],
            "optional_info": self.optional_info or None,
        }

    def to_state(self) -> dict:
        """AUTOMATIC1111's dict: ``{width: (K state dict, V state dict)}`` of contiguous fp32 CPU tensors, then
        the metadata."""
        state: dict = {}
        for size, pair in sorted(self.layers.items()):
            state[int(size)] = tuple(
                {f"linear.{key}": value.detach().to("cpu", torch.float32).contiguous().clone()
                 for key, value in module.linear.state_dict().items()} for module in pair)
        state.update(self.metadata())
        return state

    # -- inference --------------------------------------------------------------------------------------------
    def for_inference(self, device, dtype: torch.dtype = torch.float32) -> "Hypernetwork":
        """This network ready to run beside a model on ``device`` in ``dtype``; this object is not changed.

        On CPU, or with an fp32 model, the weights are fp32 (as AUTOMATIC1111 keeps them). On CUDA with a
        half-precision model the Linear weights are copied to that precision once (LayerNorm stays fp32): the
        matmuls autocast runs in AUTOMATIC1111, from weights cast once instead of at every call. Copies are
        kept (thread-safe), and made afresh when this network's weights have changed since (training).

        Args:
            device: the model's device.
            dtype: the model's dtype; only a half precision on CUDA changes the Linear weights' precision.

        Returns:
            This network itself when it already fits, else a cached copy (in eval mode).
        """
        device = torch.device(device)
        half = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        params = self.weights()
        if not half and all(p.device == device and p.dtype == torch.float32 for p in params):
            return self
        key = (str(device), dtype if half else torch.float32)
        versions = tuple(version_of(p) for p in params)
        with self._lock:
            cached = self._inference_copies.get(key)
            if cached is not None and cached[0] == versions:
                return cached[1]
            clone = copy.copy(self)
            clone._lock = threading.Lock()
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

    def __repr__(self) -> str:
        return (f"Hypernetwork(name={self.name!r}, sizes={self.sizes()}, layer_structure={self.layer_structure}, "
                f"activation_func={self.activation_func!r}, step={self.step})")


def load_hypernetwork(path) -> Hypernetwork:
    """Load a hypernetwork file (``.pt``, ``.ckpt`` or ``.safetensors``) and its ``.optim`` sidecar.

    Args:
        path: the file.

    Returns:
        A :class:`Hypernetwork` in eval mode.

    Raises:
        HypernetworkError: the file cannot be read or does not hold a valid hypernetwork, naming it.
    """
    return Hypernetwork().load(path)


def apply_hypernetworks(networks: Iterable[tuple[Hypernetwork, float]], context: torch.Tensor):
    """Chain several networks in order, K into K and V into V (AUTOMATIC1111's ``apply_hypernetworks``).

    Args:
        networks: ``(network, multiplier)`` pairs, in prompt order.
        context: the attention's context, ``(batch, tokens, width)``.

    Returns:
        ``(K context, V context)``: what ``to_k`` and ``to_v`` read.
    """
    context_k = context_v = context
    for network, multiplier in networks:
        context_k, context_v = network.apply(context_k, context_v, multiplier)
    return context_k, context_v
