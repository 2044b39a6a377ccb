"""Hypernetworks inside diffusers' UNet attention, per call.

:class:`HypernetworkAttnProcessor` replaces each attention processor of a ``UNet2DConditionModel`` (SD 1.x,
SD 2.x and SDXL all use the same ``Attention`` class). On each call it takes the networks to apply from
the processor parameter ``hypernetworks`` (passed as ``cross_attention_kwargs={"hypernetworks": ...}``),
runs each network's K module on the context before ``to_k`` and its V module before ``to_v``, in
self-attention (context = the hidden states) and cross-attention (context = the text embeddings), choosing
the module pair by the context's width and chaining several networks in prompt order, K into K and V into
V. That is AUTOMATIC1111's ``apply_hypernetworks``, number for number.

Nothing about a request is stored on the model: the active list travels with the call, so concurrent
generations sharing one UNet cannot see each other's networks (the pipeline object itself is not
re-entrant; give each thread its own view, ``Pipeline.from_pipe(base, tokenizer=copy.deepcopy(base.tokenizer))``,
with its own tokenizer when the pipeline tokenizes: a fast tokenizer keeps its padding setting on the shared
Rust object, and diffusers' ``encode_prompt`` changes it twice per call). Layers the call's networks do
not touch, and calls with no networks, go to the processor that was there before, so a model with no
active hypernetwork gives bit-identical results to the unpatched one.

The text context does not change across steps and layers, so with an :class:`ActiveHypernetworks` (one
per generation) the transformed cross-attention context is computed once per generation, not once per
layer per step. A plain list ``[(hn, multiplier), ...]`` also works, uncached (what training wants).

Self-attention contexts change at every call. There, with autograd off, affine (linear) modules are collapsed
to one map or folded into ``to_k`` / ``to_v`` by :mod:`.folding`, as its FLOP count decides per layer
(``ActiveHypernetworks(..., expected_calls=steps)``); the folded weights live in the
:class:`ActiveHypernetworks`, never on the shared model.

Two entry points:

- ``install_hypernetwork_processors(unet)`` once, then ``pipe(..., cross_attention_kwargs={"hypernetworks":
  ActiveHypernetworks([(hn, 0.8)])})`` per call: the thread-safe path (what txt2img uses).
- ``with hypernetworks_applied(pipe, [(hn, 0.8)]): pipe(prompt)``: for diffusers users in a single thread;
  the networks are bound to the processors for the duration and the original processors come back on exit.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..prompt.padding import TextPadding
from .folding import FoldedProjections, version_of
from .modules import Hypernetwork

KWARG = "hypernetworks"  # the processor parameter (and cross_attention_kwargs key) carrying the active list
_CACHE_SIZE = 4  # distinct context tensors remembered per generation (cond+uncond batch, per pipeline call)


class ActiveHypernetworks:
    """The networks one generation applies, in prompt order, and its memo of transformed text contexts.

    Make one per generation (or per ``with`` block). The memo keeps a reference to each context tensor it
    transformed and recognises it again by identity (``is``) and version counter, so a tensor changed in
    place or a new tensor is transformed afresh. The memo is used only for cross-attention, and only when
    autograd is off (a training step must build its own graph each time). Self-attention goes through
    :meth:`keys_values`, which folds affine modules into the projections (:mod:`.folding`).

    Args:
        networks: ``(network, multiplier)`` pairs, in prompt order.
        expected_calls: how many UNet calls this object will serve (the sampler's UNet evaluations); the
            per-layer choice of folding weighs its one-off cost against that many calls. None: fold wherever
            the chain allows.
    """

    def __init__(self, networks: Iterable[tuple[Hypernetwork, float]], expected_calls: int | None = None):
        self.networks: tuple[tuple[Hypernetwork, float], ...] = tuple((hn, float(m)) for hn, m in networks)
        self._widths = frozenset(width for hn, m in self.networks if m != 0 for width in hn.layers)
        self._contexts: dict[int, tuple[torch.Tensor, int | None, torch.Tensor, torch.Tensor]] = {}
        self._pinned: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.folds = FoldedProjections(self.networks, expected_calls)

    def __bool__(self) -> bool:
        return bool(self._widths)

    def __iter__(self) -> Iterator[tuple[Hypernetwork, float]]:
        return iter(self.networks)

    def __len__(self) -> int:
        return len(self.networks)

    def __repr__(self) -> str:
        return f"ActiveHypernetworks({[(hn.name, m) for hn, m in self.networks]})"

    def touches(self, width: int) -> bool:
        """Whether some network with a non-zero multiplier has a module for this context width.

        Args:
            width: the context's last dimension (an attention width).
        """
        return width in self._widths

    def transform(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K context, V context)``: every network's modules chained in order (uncached).

        Args:
            context: ``(..., width)``, what the attention's ``to_k`` and ``to_v`` would read.

        Returns:
            The K and V contexts; ``context`` itself for both when no network has a module for its width.
        """
        context_k = context_v = context
        for hn, multiplier in self.networks:
            context_k, context_v = hn.apply(context_k, context_v, multiplier)
        return context_k, context_v

    def keys_values(self, attn, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(attn.to_k(K context), attn.to_v(V context))``; with autograd off, affine runs of the chains are
        collapsed or folded into the projections (:meth:`FoldedProjections.project`).

        Args:
            attn: the diffusers ``Attention`` whose ``to_k`` and ``to_v`` project the contexts (only read).
            context: ``(..., width)``, the self-attention hidden states (or the normed text context).

        Returns:
            The keys and values, before they are split into heads.
        """
        if not self.folds.usable():
            context_k, context_v = self.transform(context)
            return attn.to_k(context_k), attn.to_v(context_v)
        return self.folds.project(attn.to_k, context, 0), self.folds.project(attn.to_v, context, 1)

    def pin(self, context: torch.Tensor) -> None:
        """Transform the text ``context`` now, with autograd as it is, and let every cross-attention layer of the
        coming UNet call use the result (:meth:`transform_cached` finds it by identity).

        For training: one forward pass then builds the network's graph for the text context once instead of
        once per layer, and outside any gradient-checkpointed block, so a block's recomputation in the backward
        pass sees the very tensors the forward pass saw. Make a fresh object per step.

        Args:
            context: the text context (``encoder_hidden_states``) the coming UNet call passes to every
                cross-attention layer; recognised there by identity.
        """
        self._pinned[id(context)] = (context, *self.transform(context))

    def transform_cached(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`transform`, memoised by tensor identity while autograd is off (and while the modules' weights
        and modes stay as they were); a context :meth:`pin` transformed is found whatever autograd's state.

        Args:
            context: the text context; a tensor changed in place since it was memoised is transformed afresh.

        Returns:
            ``(K context, V context)``, as :meth:`transform`.
        """
        pinned = self._pinned.get(id(context))
        if pinned is not None and pinned[0] is context:
            return pinned[1], pinned[2]
        if torch.is_grad_enabled():
            return self.transform(context)
        version = (version_of(context), self.folds.signature(context.shape[-1]))
        hit = self._contexts.get(id(context))
        if hit is not None and hit[0] is context and hit[1] == version:
            return hit[2], hit[3]
        context_k, context_v = self.transform(context)
        try:
            while len(self._contexts) >= _CACHE_SIZE:
                self._contexts.pop(next(iter(self._contexts)), None)
        except (RuntimeError, StopIteration):  # another thread evicted meanwhile: the memo stays small anyway
            pass
        self._contexts[id(context)] = (context, version, context_k, context_v)
        return context_k, context_v


def as_active(hypernetworks) -> ActiveHypernetworks | None:
    """Accept an :class:`ActiveHypernetworks`, a sequence of ``(hn, multiplier)``, or None.

    Args:
        hypernetworks: what a call passed as ``cross_attention_kwargs["hypernetworks"]``.

    Returns:
        ``hypernetworks`` itself when it is an :class:`ActiveHypernetworks` or None; otherwise a new one made for
        this one call (``expected_calls=1``: no memo survives it).
    """
    if hypernetworks is None or isinstance(hypernetworks, ActiveHypernetworks):
        return hypernetworks
    return ActiveHypernetworks(hypernetworks, expected_calls=1)  # made afresh for this one call


class HypernetworkAttnProcessor:
    """Attention with hypernetworks on K and V (``F.scaled_dot_product_attention``, as ``AttnProcessor2_0``).

    ``original`` is the processor this one replaced: it runs every call that applies no network at this
    layer. ``bound`` is only set by :func:`hypernetworks_applied`; a per-call ``hypernetworks`` argument
    overrides it. A per-call ``text_padding`` (:class:`~extension.prompt.padding.TextPadding`) masks the
    padding of a shorter prompt or negative prompt out of cross-attention, with or without networks. No
    request's state is kept here.

    Args:
        original: the attention processor this one replaces (diffusers' ``AttnProcessor2_0`` or another).
        bound: networks applied to every call that passes none (:func:`hypernetworks_applied` only).
    """

    def __init__(self, original, bound: ActiveHypernetworks | None = None):
        self.original = original
        self.bound = bound

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 hypernetworks=None, text_padding: TextPadding | None = None) -> torch.Tensor:
        if text_padding is not None and encoder_hidden_states is not None:
            padding = text_padding.mask(encoder_hidden_states)
            if padding is not None:
                attention_mask = padding if attention_mask is None else attention_mask + padding
        active = as_active(hypernetworks) if hypernetworks is not None else self.bound
        if encoder_hidden_states is not None:
            width = encoder_hidden_states.shape[-1]
        else:
            width = hidden_states.shape[-1] if hidden_states.ndim == 3 else hidden_states.shape[1]
        if not active or not active.touches(width):
            extra = {"temb": temb} if temb is not None else {}
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, **extra)
        return self._attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, active)

    @staticmethod
    def _attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                   active: ActiveHypernetworks) -> torch.Tensor:
        # diffusers' AttnProcessor2_0, with the hypernetworks between the context and to_k / to_v.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)

        if encoder_hidden_states is None:
            key, value = active.keys_values(attn, hidden_states)
        elif attn.norm_cross:
            key, value = active.keys_values(attn, attn.norm_encoder_hidden_states(encoder_hidden_states))
        else:  # the text context: transformed once per generation, which costs less than folding
            context_k, context_v = active.transform_cached(encoder_hidden_states)
            key, value = attn.to_k(context_k), attn.to_v(context_v)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                       dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# -- installing -------------------------------------------------------------------------------------------
def unet_of(pipe_or_unet):
    """The UNet of a pipeline, or the argument itself when it is a UNet.

    Args:
        pipe_or_unet: a diffusers pipeline (anything with a ``unet``) or a ``UNet2DConditionModel``.
    """
    unet = getattr(pipe_or_unet, "unet", None)
    return unet if unet is not None else pipe_or_unet


def _original(processor):
    return processor.original if isinstance(processor, HypernetworkAttnProcessor) else processor


def is_installed(pipe_or_unet) -> bool:
    """Whether every attention layer of the UNet has a :class:`HypernetworkAttnProcessor`.

    Args:
        pipe_or_unet: a diffusers pipeline or its UNet.
    """
    processors = unet_of(pipe_or_unet).attn_processors
    return bool(processors) and all(isinstance(p, HypernetworkAttnProcessor) for p in processors.values())


def install_hypernetwork_processors(pipe_or_unet) -> None:
    """Put a :class:`HypernetworkAttnProcessor` in every attention layer (idempotent; keeps the originals).

    Until a call passes ``hypernetworks``, every layer computes exactly what its original processor did.

    Args:
        pipe_or_unet: a diffusers pipeline or its UNet; the UNet's processors are replaced in place.
    """
    unet = unet_of(pipe_or_unet)
    current = unet.attn_processors
    if all(isinstance(p, HypernetworkAttnProcessor) and p.bound is None for p in current.values()):
        return
    unet.set_attn_processor({name: p if isinstance(p, HypernetworkAttnProcessor) and p.bound is None
                             else HypernetworkAttnProcessor(_original(p)) for name, p in current.items()})


def remove_hypernetwork_processors(pipe_or_unet) -> None:
    """Put back the processors :func:`install_hypernetwork_processors` replaced (the same objects).

    Args:
        pipe_or_unet: a diffusers pipeline or its UNet.
    """
    unet = unet_of(pipe_or_unet)
    unet.set_attn_processor({name: _original(p) for name, p in unet.attn_processors.items()})


def for_model(networks: Sequence[tuple[Hypernetwork, float]], pipe_or_unet) -> list[tuple[Hypernetwork, float]]:
    """The networks as they run beside this UNet (its device; see :meth:`Hypernetwork.for_inference`).
    The networks passed in are not changed: they may be shared by other requests.

    Args:
        networks: ``(network, multiplier)`` pairs, in prompt order.
        pipe_or_unet: the pipeline or UNet they will run in (its device and dtype decide the copies).

    Returns:
        The same pairs, each network replaced by the copy that runs on the UNet's device and precision.
    """
    unet = unet_of(pipe_or_unet)
    return [(hn.for_inference(unet.device, unet.dtype), multiplier) for hn, multiplier in networks]


@contextlib.contextmanager
def hypernetworks_applied(pipe_or_unet, networks: Iterable[tuple[Hypernetwork, float]]):
    """Apply hypernetworks to every call of a diffusers pipeline (or UNet) inside the ``with`` block.

    ``networks`` is ``[(hypernetwork, multiplier), ...]``, applied in order, as AUTOMATIC1111 chains them::

        with hypernetworks_applied(pipe, [(load_hypernetwork("anime.pt"), 0.8)]):
            image = pipe("a cat").images[0]

    Works on any pipeline with a ``UNet2DConditionModel`` (SD 1.x, 2.x, SDXL). The networks run on the
    UNet's device (as copies: the objects passed in are not changed). On exit the UNet's processors are the very
    objects it had before.

    This binds the networks to the shared UNet for the duration, so it is for single-threaded library use:
    every call on that UNet inside the block, from any thread, gets them. For concurrent generations use the
    per-call path instead: :func:`install_hypernetwork_processors` once, then pass
    ``cross_attention_kwargs={"hypernetworks": ActiveHypernetworks(networks)}`` to each call.

    Args:
        pipe_or_unet: a diffusers pipeline or its UNet.
        networks: ``(network, multiplier)`` pairs, in prompt order.

    Yields:
        The :class:`ActiveHypernetworks` bound to the processors for the block.
    """
    unet = unet_of(pipe_or_unet)
    active = ActiveHypernetworks(for_model(list(networks), unet))
    saved = dict(unet.attn_processors)
    unet.set_attn_processor({name: HypernetworkAttnProcessor(_original(p), bound=active) for name, p in saved.items()})
    try:
        yield active
    finally:
        unet.set_attn_processor(dict(saved))



# -- compatibility ----------------------------------------------------------------------------------------
def attention_widths(pipe_or_unet) -> set[int]:
    """Every context width the UNet's attention layers see (self-attention widths and the text width).

    Args:
        pipe_or_unet: a diffusers pipeline or its UNet.

    Returns:
        The ``to_k.in_features`` of every diffusers ``Attention`` in the UNet.
    """
    from diffusers.models.attention_processor import Attention

    return {module.to_k.in_features for module in unet_of(pipe_or_unet).modules() if isinstance(module, Attention)}


def compatibility_messages(hn: Hypernetwork, model_widths: set[int], *, checkpoint_name: str | None = None,
                           checkpoint_hash: str | None = None) -> list[str]:
    """Warnings for a network that does not fit the loaded model (the image is still made).

    - none of its widths is one of the model's attention widths: it has no effect;
    - some of its widths are not: only part of it applies (an SD 1.x network on SDXL applies only its
      640/1280 self-attention modules, as in A1111);
    - it was trained on another checkpoint (by hash when both are known, else by name).

    Args:
        hn: the network.
        model_widths: the model's attention widths (:func:`attention_widths`).
        checkpoint_name: the loaded checkpoint's name, compared with the network's ``sd_checkpoint_name``.
        checkpoint_hash: the loaded checkpoint's (short) hash, compared with the network's ``sd_checkpoint``.

    Returns:
        One message per problem; empty when the network fits.
    """
    name = hn.name or "hypernetwork"
    messages = []
    sizes = set(hn.layers)
    fitting = sizes & set(model_widths)
    if not fitting:
        messages.append(f"Hypernetwork {name} has no module for this model's attention widths "
                        f"(it has {sorted(sizes)}, the model uses {sorted(model_widths)}): it has no effect.")
    elif sizes - fitting:
        messages.append(f"Hypernetwork {name} was made for another architecture: only its modules for "
                        f"{sorted(fitting)} apply; {sorted(sizes - fitting)} do not fit this model.")
    trained_hash, trained_name = hn.sd_checkpoint, hn.sd_checkpoint_name
    if trained_hash and checkpoint_hash:
        different = not (trained_hash.startswith(checkpoint_hash) or checkpoint_hash.startswith(trained_hash))
    else:
        different = bool(trained_name and checkpoint_name and trained_name != checkpoint_name)
    if different:
        trained = " ".join(x for x in (trained_name, f"[{trained_hash}]" if trained_hash else None) if x)
        loaded = " ".join(x for x in (checkpoint_name, f"[{checkpoint_hash}]" if checkpoint_hash else None) if x)
        messages.append(f"Hypernetwork {name} was trained on {trained}, not on the loaded model {loaded}; "
                        f"results may differ.")
    return messages
