"""Affine hypernetworks collapsed to one map, and folded into the attention's K/V projection.

A module with no activation and no layer norm (:attr:`HypernetworkConfig.is_affine`; dropout is off at
inference) computes ``x + m * (W_n (... (W_1 x + b_1) ...) + b_n)``, which is ``x + m * (M x + c0)`` with
``M = W_n ... W_1`` and ``c0`` depending only on the weights (:func:`affine_parts`, cached per module). Modules
chained at one width with multipliers ``m_i`` compose into one map ``x -> x + D x + c``
(``I + D = (I + m_n M_n) ... (I + m_1 M_1)``). The projection after it folds it in:
``W (x + D x + c) + b = (W + W D) x + (W c + b)``, so the call computes ``F.linear(context, W', b')`` in place
of ``to_k(context)``: no per-call cost at all. ``W'`` lives in the per-generation :class:`FoldedProjections`,
never on the model, whose weights are shared by concurrent generations and are not changed.

Which of the three ways each projection layer takes (the modules as they are, the collapsed map before the
projection, or the fold) is a FLOP count (:func:`choose`), made at the layer's first call from its token count
and the generation's expected number of UNet calls. Non-affine modules in a chain run as they are
(``HypernetworkModule.forward``, AUTOMATIC1111's sequence) between the affine runs, which still collapse, and a
trailing affine run can still fold. Training never folds: with autograd on, or any module in train mode,
:meth:`FoldedProjections.usable` is false and the caller runs the modules as AUTOMATIC1111 does.

Accuracy: folding reassociates fp32 sums. On the tiny test UNets the folded output differs from AUTOMATIC1111's
sequence by at most ``1e-5`` of the output's largest magnitude (measured: up to ``1.6e-6``; ``tests/test_folding.py``).
"""
from __future__ import annotations

import dataclasses
import math
import threading
from typing import Sequence

import torch
import torch.nn.functional as F

AFFINE_LAYERS = (torch.nn.Linear, torch.nn.Dropout, torch.nn.Identity)  # Dropout is the identity in eval mode


# -- one module ---------------------------------------------------------------------------------------------
class AffineMemo:
    """A module's collapsed map ``(M, c0)`` per (device, dtype), remembered while its weights stay the same.

    Networks are shared by concurrent generations, so reads and writes hold a lock. An entry is valid for the
    exact parameter tensors and version counters it was computed from (training, ``load_state_dict`` and
    in-place edits change those). Copies (``copy.deepcopy``, pickling) start empty.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[tuple, torch.Tensor, torch.Tensor]] = {}

    def __deepcopy__(self, memo) -> "AffineMemo":
        return AffineMemo()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state) -> None:
        self.__init__()

    def get(self, module, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, c0)`` of ``module`` on ``device`` in ``dtype``, from the memo while its weights are unchanged.

        Args:
            module: the affine ``HypernetworkModule`` this memo belongs to.
            device: where the result lives.
            dtype: the precision it is computed and returned in.
        """
        signature = parameter_signature(module)
        key = (str(device), dtype)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] == signature:
                return hit[1], hit[2]
        matrix, offset = collapse(module.linear, device, dtype)
        with self._lock:
            self._entries[key] = (signature, matrix, offset)
        return matrix, offset


def parameter_signature(module) -> tuple:
    """Identity, storage and version counter of every parameter of a ``HypernetworkModule``'s layers: changes
    whenever the weights can have changed (in-place edits, ``load_state_dict``, ``.data =``, ``.to()``).

    Args:
        module: a ``HypernetworkModule``.
    """
    return tuple((id(p), p.data_ptr(), version_of(p)) for layer in module.linear
                 for p in layer._parameters.values() if p is not None)


def version_of(tensor: torch.Tensor) -> int | None:
    """``tensor._version``, or None for an inference tensor (made under ``torch.inference_mode``, as a host's
    generation makes everything): those track no version, and cannot be changed in place outside that mode."""
    return None if tensor.is_inference() else tensor._version


def is_affine_now(module) -> bool:
    """Whether ``module`` (a ``HypernetworkModule``) is an affine map of its input as it runs now: an affine
    structure, in eval mode (dropout off, the multiplier honoured).

    Args:
        module: a ``HypernetworkModule``.
    """
    return (not module.training and module.config.is_affine
            and all(isinstance(layer, AFFINE_LAYERS) for layer in module.linear))


@torch.no_grad()
def collapse(layers: torch.nn.Sequential, device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, c0)`` with ``layers(x) == M @ x + c0`` for an eval-mode stack of Linear / Dropout / Identity.

    Computed in ``dtype`` on ``device`` (``M = W_n ... W_1``: ``2 * sum`` of the chain's matmul sizes FLOPs).

    Args:
        layers: a module's ``linear`` stack; only its Linear layers count (Dropout and Identity are the
            identity in eval mode).
        device: where the result lives.
        dtype: the precision it is computed and returned in.

    Returns:
        ``(M, c0)``: ``M`` is ``(width, width)`` and ``c0`` ``(width,)``.
    """
    matrix = offset = None
    for layer in layers:
        if not isinstance(layer, torch.nn.Linear):
            continue
        weight = layer.weight.to(device, dtype)
        bias = layer.bias.to(device, dtype) if layer.bias is not None else None
        if matrix is None:
            matrix = weight.clone()
            offset = bias.clone() if bias is not None else torch.zeros(weight.shape[0], device=device, dtype=dtype)
        else:
            matrix = weight @ matrix
            offset = weight @ offset if bias is None else torch.addmv(bias, weight, offset)
    return matrix, offset


def affine_parts(module, device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, c0)`` of an affine ``HypernetworkModule``: ``module(x, m) == x + m * (M @ x + c0)`` in eval mode.

    Args:
        module: a ``HypernetworkModule`` for which :func:`is_affine_now` holds.
        device: where the result lives.
        dtype: the precision it is computed and returned in.

    Returns:
        ``(M, c0)``, shared (cached on the module): do not change them in place.
    """
    memo = getattr(module, "affine_memo", None)
    if memo is None:  # a module built some other way: computed afresh
        return collapse(module.linear, torch.device(device), dtype)
    return memo.get(module, torch.device(device), dtype)


def raw_flops_per_token(module) -> int:
    """FLOPs of running ``module``'s Linears on one token (2 x in x out each, the FLOP counter's convention).

    Args:
        module: a ``HypernetworkModule``.
    """
    return sum(2 * layer.in_features * layer.out_features for layer in module.linear
               if isinstance(layer, torch.nn.Linear))


# -- a chain at one width, for K or for V ----------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class AffineRun:
    """Consecutive affine modules of a chain, ``[(module, multiplier), ...]``, and their composed map.

    Args:
        steps: the run's ``(module, multiplier)`` pairs, in chain order.
        width: the context width they act on.
    """

    steps: list
    width: int
    _parts: dict = dataclasses.field(default_factory=dict)  # (device, dtype) -> (D, c)

    @property
    def raw_flops(self) -> int:
        return sum(raw_flops_per_token(module) for module, _ in self.steps)

    @property
    def collapsed_flops(self) -> int:
        return 2 * self.width * self.width

    @property
    def compose_flops(self) -> int:
        """FLOPs of composing the run's maps (``2 d^3`` per module after the first)."""
        return 2 * self.width ** 3 * (len(self.steps) - 1)

    def parts(self, device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D, c)``: the run maps ``x`` to ``x + D @ x + c``. Not locked: the caller holds its lock.

        Args:
            device: where the result lives.
            dtype: the precision it is returned in (composed in at least fp32, then cast; both are kept).
        """
        key = (str(device), dtype)
        if key not in self._parts:
            compute = torch.promote_types(dtype, torch.float32)
            same = self._parts.get((str(device), compute))
            if same is None:
                same = compose([(*affine_parts(module, device, compute), m) for module, m in self.steps])
                self._parts[(str(device), compute)] = same
            self._parts[key] = (same[0].to(dtype), same[1].to(dtype))
        return self._parts[key]


@dataclasses.dataclass(eq=False)
class RawModule:
    """A non-affine module of a chain: it runs as it is (AUTOMATIC1111's sequence).

    Args:
        module: the ``HypernetworkModule``.
        multiplier: its multiplier in this chain.
    """

    module: torch.nn.Module
    multiplier: float


def compose(maps: Sequence[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D, c)`` of ``x -> x + m_i (M_i x + c0_i)`` applied in order: ``I + D = prod (I + m_i M_i)``.

    Args:
        maps: ``(M_i, c0_i, m_i)`` per module, in the order the modules run (at least one).

    Returns:
        ``(D, c)`` with the chain mapping ``x`` to ``x + D @ x + c``.
    """
    delta = offset = None
    for matrix, c0, m in maps:
        step, step_offset = matrix * m, c0 * m
        if delta is None:
            delta, offset = step, step_offset
        else:  # (I + S)(I + D) = I + D + S + S D;  (I + S) c + s
            delta = delta + step + step @ delta
            offset = offset + step_offset + step @ offset
    return delta, offset


def segments_of(steps: Sequence[tuple[torch.nn.Module, float]], width: int) -> tuple:
    """A chain ``[(module, multiplier), ...]`` as :class:`AffineRun` and :class:`RawModule` segments, in order.

    Args:
        steps: the chain's ``(module, multiplier)`` pairs at one width, for K or for V.
        width: that width.

    Returns:
        The segments: consecutive modules for which :func:`is_affine_now` holds are one :class:`AffineRun`.
    """
    segments: list = []
    for module, multiplier in steps:
        if is_affine_now(module):
            if segments and isinstance(segments[-1], AffineRun):
                segments[-1].steps.append((module, multiplier))
            else:
                segments.append(AffineRun([(module, multiplier)], width))
        else:
            segments.append(RawModule(module, multiplier))
    return tuple(segments)


# -- the cost model ---------------------------------------------------------------------------------------
RAW, COLLAPSED, FOLDED = "raw", "collapsed", "folded"


def fold_flops(d_in: int, d_out: int) -> int:
    """FLOPs of ``W + W D`` and ``W c + b`` for a ``d_out x d_in`` projection.

    Args:
        d_in: the projection's input width (the chain's width).
        d_out: its output width.
    """
    return 2 * d_in * d_in * d_out + 2 * d_in * d_out + d_in * d_out


def choose(run: AffineRun, tokens: int, calls: int | None, d_out: int | None) -> str:
    """How an affine run is applied at one layer: ``raw``, ``collapsed`` or ``folded`` (fewest FLOPs).

    Args:
        run: the run.
        tokens: context tokens per call at this layer (batch x sequence).
        calls: UNet calls expected in the generation; None means many (fold whenever possible).
        d_out: the projection's output width when the run is last in its chain (it can fold), else None.

    Returns:
        The cheapest: ``raw`` costs ``calls * tokens * run.raw_flops``; ``collapsed`` costs
        ``run.compose_flops + calls * tokens * 2 d^2``; ``folded`` costs ``run.compose_flops +``
        :func:`fold_flops` once. The composition is charged to every layer that needs it (conservative).
    """
    if calls is None:
        if d_out is not None:
            return FOLDED
        return COLLAPSED if run.collapsed_flops <= run.raw_flops else RAW
    costs = {RAW: calls * tokens * run.raw_flops,
             COLLAPSED: run.compose_flops + calls * tokens * run.collapsed_flops}
    if d_out is not None:
        costs[FOLDED] = run.compose_flops + fold_flops(run.width, d_out)
    return min((FOLDED, COLLAPSED, RAW), key=lambda option: costs.get(option, math.inf))


# -- per generation -------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class _Layer:
    """One projection's plan for a chain: what the affine runs do, and the folded weights when it folds."""

    segments: tuple
    weight: torch.Tensor  # the projection weight it was made for (checked by identity and version)
    version: tuple
    modes: tuple  # per segment: RAW / COLLAPSED / FOLDED (RawModule segments: RAW)
    folded: tuple[torch.Tensor, torch.Tensor | None] | None


class FoldedProjections:
    """The K/V projections of one generation with its networks' affine runs collapsed or folded in.

    Holds, per (width, K or V), the chain's segments (rebuilt when a module's weights or mode change) and, per
    projection layer, the plan :func:`choose` made at its first call and the folded weight and bias. Nothing
    is written to the model. Thread-safe (a ``with hypernetworks_applied`` block shares one between threads).

    Args:
        networks: ``(network, multiplier)`` pairs in prompt order (zero multipliers are left out: identity).
        expected_calls: UNet calls this object will serve (the sampler's steps); None: fold wherever possible.
    """

    def __init__(self, networks: Sequence[tuple], expected_calls: int | None = None):
        self.networks = tuple((hn, m) for hn, m in networks if m != 0)
        self.expected_calls = expected_calls
        self._lock = threading.Lock()
        self._chains: dict[tuple[int, int], tuple[tuple, tuple]] = {}  # (width, which) -> (signature, segments)
        self._layers: dict[int, _Layer] = {}  # id(projection) -> plan
        self._steps: dict[tuple[int, int], tuple] = {}

    def steps(self, width: int, which: int) -> tuple[tuple[torch.nn.Module, float], ...]:
        """The chain at ``width`` for K (``which`` 0) or V (1): ``((module, multiplier), ...)``.

        Args:
            width: the context width.
            which: 0 for K modules, 1 for V modules.
        """
        steps = self._steps.get((width, which))
        if steps is None:
            steps = tuple((hn.layers[width][which], m) for hn, m in self.networks if width in hn.layers)
            self._steps[(width, which)] = steps
        return steps

    @staticmethod
    def usable() -> bool:
        """False while autograd is on: training runs the modules as they are. (Modules in train mode, autograd
        off, also run as they are: :func:`segments_of` never counts them as affine.)"""
        return not torch.is_grad_enabled()

    def signature(self, width: int, which: int | None = None) -> tuple:
        """What the chains at ``width`` (K and V, or only ``which``) compute depends on: every module's identity,
        mode and parameter versions.

        Args:
            width: the context width.
            which: 0 for K, 1 for V, or None for both.
        """
        whiches = (0, 1) if which is None else (which,)
        return tuple((id(module), module.training, parameter_signature(module))
                     for w in whiches for module, _ in self.steps(width, w))

    def segments(self, width: int, which: int) -> tuple:
        """The chain at ``width`` for K (``which`` 0) or V (1) as segments (:func:`segments_of`), kept while
        :meth:`signature` stays the same.

        Args:
            width: the context width.
            which: 0 for K modules, 1 for V modules.
        """
        steps = self.steps(width, which)
        signature = self.signature(width, which)
        with self._lock:
            hit = self._chains.get((width, which))
            if hit is not None and hit[0] == signature:
                return hit[1]
            segments = segments_of(steps, width)
            self._chains[(width, which)] = (signature, segments)
            return segments

    def modes(self) -> list[tuple[str, ...]]:
        """The plans made so far, one tuple per projection layer: each chain segment's mode, in order."""
        return [modes for _, modes in self.plans()]

    def plans(self) -> list[tuple[int, tuple[str, ...]]]:
        """``[(id(projection), modes), ...]`` for the projection layers planned so far (see :meth:`modes`)."""
        with self._lock:
            return [(key, layer.modes) for key, layer in self._layers.items()]

    def project(self, projection: torch.nn.Linear, context: torch.Tensor, which: int) -> torch.Tensor:
        """``projection(chain(context))``, with the chain's affine runs collapsed or folded as planned.

        Args:
            projection: the attention's ``to_k`` (``which`` 0) or ``to_v`` (1); its weights are only read.
            context: ``(..., width)``, what the chain reads.
            which: 0 for K modules, 1 for V modules.

        Returns:
            What ``projection`` gives for the chain's output: keys or values, ``(..., projection.out_features)``.
        """
        layer = self._plan(projection, context, which)
        x = context
        for segment, mode in zip(layer.segments, layer.modes):
            if isinstance(segment, RawModule):
                x = segment.module(x, segment.multiplier)
            elif mode == RAW:
                for module, multiplier in segment.steps:
                    x = module(x, multiplier)
            elif mode == COLLAPSED:
                delta, offset = self._parts(segment, x.device, x.dtype)
                x = x + F.linear(x, delta, offset)
        if layer.folded is not None:
            return F.linear(x, *layer.folded)
        return projection(x)

    def _parts(self, segment: AffineRun, device, dtype):
        with self._lock:
            return segment.parts(device, dtype)

    def _plan(self, projection: torch.nn.Linear, context: torch.Tensor, which: int) -> _Layer:
        segments = self.segments(context.shape[-1], which)
        weight, bias = projection.weight, projection.bias
        version = (version_of(weight), None if bias is None else (id(bias), version_of(bias)))
        with self._lock:
            layer = self._layers.get(id(projection))
        if layer is not None and layer.segments is segments and layer.weight is weight and layer.version == version:
            return layer
        tokens = context.numel() // context.shape[-1]
        modes = []
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            modes.append(RAW if isinstance(segment, RawModule) else
                         choose(segment, tokens, self.expected_calls, projection.out_features if last else None))
        folded = None
        if modes and modes[-1] == FOLDED:
            delta, offset = self._parts(segments[-1], weight.device, torch.promote_types(weight.dtype, torch.float32))
            folded = fold_into(weight, bias, delta, offset)
        layer = _Layer(segments, weight, version, tuple(modes), folded)
        with self._lock:
            self._layers[id(projection)] = layer
        return layer


@torch.no_grad()
def fold_into(weight: torch.Tensor, bias: torch.Tensor | None, delta: torch.Tensor,
              offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W + W D, W c + b)``: the projection ``x -> W x + b`` after ``x -> x + D x + c``, as one Linear.

    Computed in ``delta``'s dtype, returned in ``weight``'s. ``weight`` and ``bias`` are only read.

    Args:
        weight: the projection's ``(d_out, d_in)`` weight.
        bias: its bias, or None.
        delta: ``D``, ``(d_in, d_in)``.
        offset: ``c``, ``(d_in,)``.

    Returns:
        ``(folded weight, folded bias)``: new tensors, in ``weight``'s dtype.
    """
    compute = delta.dtype
    w = weight.to(compute)
    folded_weight = torch.addmm(w, w, delta)
    folded_bias = w @ offset if bias is None else torch.addmv(bias.to(compute), w, offset)
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)
