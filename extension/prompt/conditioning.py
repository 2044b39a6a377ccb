"""AUTOMATIC1111's prompt conditioning: emphasis, 75-token chunks, CLIP skip -> text embeddings.

What A1111 does, and so what this does:

- ``(word)`` multiplies the attention weight of its tokens by 1.1, ``[word]`` by 1/1.1, ``(word:1.3)`` by
  1.3; brackets nest and multiply; ``\\(`` etc. are literal; unbalanced brackets apply to the end.
  ``BREAK`` ends the current chunk.
- The prompt is tokenized (no BOS/EOS) and cut into chunks of 75 tokens; each chunk becomes
  ``BOS + 75 tokens (EOS-padded) + EOS`` = 77 tokens. When a chunk fills up, text after its last comma
  (if that comma is within the last 20 tokens) moves to the next chunk. Chunks are encoded separately and
  concatenated along the token axis, so a 100-token prompt gives 154 embeddings.
- Emphasis ("Original"): the encoder's hidden states are multiplied by their tokens' weights, then rescaled
  so that the chunk's mean is what it was before.
- CLIP skip ``n`` (A1111 semantics, 1 = last layer): hidden states of layer ``-n``, then the final layer norm.
  SD 2.x ignores it and SDXL uses the penultimate layer without the norm, as A1111 does.
- Prompt and negative prompt of different lengths (chunk counts): A1111 (``pad_cond_uncond`` off, its
  default) runs the UNet on each separately, each attending to its own tokens only. diffusers batches them
  together, so the shorter is padded with the empty prompt's encoding and the padding is masked out of
  cross-attention (:class:`extension.prompt.padding.TextPadding`): the same numbers, in one UNet call. With
  ``pad_cond_uncond`` on ("Pad conds" in the infotext) the padding is attended to, as A1111 then does.

Prompt editing (``[a:b:0.5]``, ``[a|b]``) is parsed in :mod:`extension.prompt.schedule`;
:class:`ScheduledConditioning` encodes each text it schedules. Textual-inversion embeddings are not handled.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

import torch

from .schedule import index_at, prompt_schedule

ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1
COMMA_PADDING_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"

_RE_ATTENTION = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
BREAK = ("BREAK", -1.0)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """A1111's ``parse_prompt_attention``: ``[(text, weight), ...]`` with runs of equal weight merged.

    >>> parse_prompt_attention('an (important) word')
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_attention(r'\\(literal\\]')
    [('(literal]', 1.0)]

    ``("BREAK", -1.0)`` entries mark chunk breaks.

    Args:
        text: the prompt (tags removed, prompt editing resolved).

    Returns:
        ``[(text, weight), ...]``; ``[("", 1.0)]`` for an empty prompt.
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for match in _RE_ATTENTION.finditer(text):
        piece = match.group(0)
        weight = match.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_brackets.append(len(res))
        elif piece == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif piece == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_BRACKET_MULTIPLIER)
        elif piece == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_BRACKET_MULTIPLIER)
        else:
            for i, part in enumerate(_RE_BREAK.split(piece)):
                if i > 0:
                    res.append(list(BREAK))
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, ROUND_BRACKET_MULTIPLIER)
    for pos in square_brackets:
        multiply_range(pos, SQUARE_BRACKET_MULTIPLIER)

    if not res:
        res = [["", 1.0]]

    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(piece, float(weight)) for piece, weight in res]


@dataclasses.dataclass
class PromptChunk:
    """77 token ids (BOS + 75 + EOS) and one weight per token.

    Args:
        tokens: the token ids.
        multipliers: one emphasis weight per token id.
    """

    tokens: list[int] = dataclasses.field(default_factory=list)
    multipliers: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """The token ids chunking needs, read from a CLIP tokenizer.

    Args:
        id_start: BOS.
        id_end: EOS.
        id_pad: what follows EOS in a chunk (EOS on SD 1.x's tokenizer, ``!`` on OpenCLIP's).
        comma_token: the id of ``,</w>``, or None.
        chunk_length: tokens per chunk between BOS and EOS (75).
    """

    id_start: int
    id_end: int
    id_pad: int
    comma_token: int | None
    chunk_length: int = 75

    @classmethod
    def of(cls, tokenizer) -> "TokenizerSpec":
        """The spec of a ``transformers`` CLIP tokenizer.

        Args:
            tokenizer: the tokenizer (its ``model_max_length`` minus 2 is the chunk length).
        """
        id_end = tokenizer.eos_token_id
        id_pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else id_end
        return cls(id_start=tokenizer.bos_token_id, id_end=id_end, id_pad=id_pad,
                   comma_token=_comma_token(tokenizer),
                   chunk_length=int(getattr(tokenizer, "model_max_length", 77) or 77) - 2)


def _comma_token(tokenizer) -> int | None:
    """The id of ``,</w>``: one token lookup (``get_vocab()`` would copy the whole 49408-entry vocabulary)."""
    token_id = tokenizer.convert_tokens_to_ids(",</w>")
    unknown = getattr(tokenizer, "unk_token_id", None)
    return None if token_id is None or (token_id == unknown and ",</w>" != getattr(tokenizer, "unk_token", None)) \
        else int(token_id)


def tokenize_prompt(tokenizer, text: str, *, comma_padding_backtrack: int = COMMA_PADDING_BACKTRACK
                    ) -> tuple[list[PromptChunk], int]:
    """A1111's ``tokenize_line``: ``(chunks, token count)``; every chunk holds 77 ids and weights.

    Args:
        tokenizer: a CLIP tokenizer.
        text: the prompt (emphasis and ``BREAK`` are parsed here).
        comma_padding_backtrack: how far back a comma may be for the text after it to move to the next chunk
            when a chunk fills up (0: never).

    Returns:
        ``(chunks, token count)``: at least one chunk; the count is 75 for every chunk but the last, plus the
        last chunk's tokens (A1111's counter).
    """
    spec = TokenizerSpec.of(tokenizer)
    parsed = parse_prompt_attention(text)
    tokenized = tokenizer([piece for piece, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]

    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def next_chunk(is_last: bool = False) -> None:
        nonlocal token_count, last_comma, chunk
        token_count += len(chunk.tokens) if is_last else spec.chunk_length
        to_add = spec.chunk_length - len(chunk.tokens)
        if to_add > 0:
            chunk.tokens += [spec.id_end] * to_add
            chunk.multipliers += [1.0] * to_add
        chunk.tokens = [spec.id_start] + chunk.tokens + [spec.id_end]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = PromptChunk()

    for tokens, (piece, weight) in zip(tokenized, parsed):
        if (piece, weight) == BREAK:
            next_chunk()
            continue
        for token in tokens:
            if token == spec.comma_token:
                last_comma = len(chunk.tokens)
            elif (comma_padding_backtrack != 0 and len(chunk.tokens) == spec.chunk_length and last_comma != -1
                  and len(chunk.tokens) - last_comma <= comma_padding_backtrack):
                break_location = last_comma + 1
                reloc_tokens = chunk.tokens[break_location:]
                reloc_mults = chunk.multipliers[break_location:]
                chunk.tokens = chunk.tokens[:break_location]
                chunk.multipliers = chunk.multipliers[:break_location]
                next_chunk()
                chunk.tokens = reloc_tokens
                chunk.multipliers = reloc_mults
            if len(chunk.tokens) == spec.chunk_length:
                next_chunk()
            chunk.tokens.append(token)
            chunk.multipliers.append(weight)

    if chunk.tokens or not chunks:
        next_chunk(is_last=True)
    return chunks, token_count


def _pad_after_end(tokens: list[int], spec: TokenizerSpec) -> list[int]:
    """SD 2.x / SDXL's second encoder pad with a token other than EOS: replace ids after the first EOS."""
    if spec.id_pad == spec.id_end:
        return tokens
    index = tokens.index(spec.id_end)
    return tokens[: index + 1] + [spec.id_pad] * (len(tokens) - index - 1)


@dataclasses.dataclass(frozen=True)
class EncoderLayer:
    """Which hidden state an encoder hands to the UNet.

    ``skip``: A1111's CLIP skip (1 = last layer, 2 = penultimate, ...); ``final_norm``: apply the final layer
    norm to a hidden state taken before the last layer (SD 1.x does, SDXL does not).
    """

    skip: int = 1
    final_norm: bool = True


def _final_layer_norm(text_encoder):
    # transformers 5: CLIPTextModel *is* the text transformer; older versions nest it in ``.text_model``.
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


@torch.no_grad()
def encode_chunks(text_encoder, tokenizer, chunks: Sequence[PromptChunk], layer: EncoderLayer = EncoderLayer()
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode chunks (one forward pass for all), apply emphasis per chunk, concatenate.

    Returns ``(embeddings [1, 77 * len(chunks), dim], pooled of the first chunk or None)``; ``pooled`` is
    the projected text embedding when the encoder has a projection (SDXL's second encoder).

    Args:
        text_encoder: a ``CLIPTextModel`` or ``CLIPTextModelWithProjection``.
        tokenizer: its tokenizer (for the BOS, EOS and padding ids).
        chunks: from :func:`tokenize_prompt`.
        layer: which hidden state to hand on (CLIP skip, final norm).
    """
    spec = TokenizerSpec.of(tokenizer)
    device = text_encoder.device
    ids = torch.tensor([_pad_after_end(c.tokens, spec) for c in chunks], dtype=torch.long, device=device)
    out = text_encoder(ids, output_hidden_states=True)
    num_layers = len(out.hidden_states) - 1
    skip = max(1, min(int(layer.skip), num_layers))
    if skip == 1 and layer.final_norm:
        z = out.last_hidden_state
    else:
        z = out.hidden_states[-skip]
        if layer.final_norm:
            z = _final_layer_norm(text_encoder)(z)
    pooled = getattr(out, "text_embeds", None)
    pooled = pooled[:1] if pooled is not None else None

    multipliers = torch.tensor([c.multipliers for c in chunks], dtype=z.dtype, device=device)
    if bool((multipliers != 1).any()):
        z = apply_emphasis(z, multipliers)
    return z.reshape(1, -1, z.shape[-1]), pooled


def apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis on ``z [chunks, 77, dim]``: scale by weights, restore each chunk's mean.

    One guard A1111 lacks: when a chunk's mean is numerically zero (an untrained encoder whose final layer
    norm has no bias), the mean cannot be restored and only the weights are applied.

    Args:
        z: the encoder's hidden states, ``[chunks, 77, dim]``.
        multipliers: one weight per token, ``[chunks, 77]``.

    Returns:
        The weighted hidden states, in ``z``'s dtype.
    """
    original_mean = z.float().mean(dim=(1, 2), keepdim=True)
    weighted = z * multipliers.unsqueeze(-1)
    new_mean = weighted.float().mean(dim=(1, 2), keepdim=True)
    scale = z.float().abs().mean(dim=(1, 2), keepdim=True)
    degenerate = (original_mean.abs() <= 1e-4 * scale) | (new_mean.abs() <= 1e-4 * scale)
    ratio = torch.where(degenerate, torch.ones_like(new_mean), original_mean / new_mean)
    return weighted * ratio.to(z.dtype)


def encode_prompt(text_encoder, tokenizer, text: str, layer: EncoderLayer = EncoderLayer()
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(embeddings [1, 77 * chunks, dim], pooled or None)`` for one prompt, the A1111 way.

    Args:
        text_encoder: a CLIP text model.
        tokenizer: its tokenizer.
        text: the prompt.
        layer: which hidden state to hand on.
    """
    chunks, _ = tokenize_prompt(tokenizer, text)
    return encode_chunks(text_encoder, tokenizer, chunks, layer)


def count_tokens(tokenizer, text: str) -> tuple[int, int]:
    """``(tokens used, token limit before the next chunk)``, as A1111's token counter shows.

    Args:
        tokenizer: a CLIP tokenizer.
        text: the prompt.
    """
    chunks, token_count = tokenize_prompt(tokenizer, text)
    spec = TokenizerSpec.of(tokenizer)
    return token_count, max(len(chunks), 1) * spec.chunk_length


def pad_to_same_length(cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the shorter conditioning with repeats of the empty prompt's 77-token encoding.

    Args:
        cond: the prompt's embeddings, ``[batch, 77 * n, dim]``.
        uncond: the negative prompt's, ``[batch, 77 * m, dim]``.
        empty: the empty prompt's, ``[1, 77, dim]``.

    Returns:
        ``(cond, uncond)`` of the same length.
    """
    def padded(z: torch.Tensor, length: int) -> torch.Tensor:
        missing = (length - z.shape[1]) // empty.shape[1]
        if missing <= 0:
            return z
        return torch.cat([z, empty.to(z.dtype).expand(z.shape[0], -1, -1).repeat(1, missing, 1)], dim=1)

    length = max(cond.shape[1], uncond.shape[1])
    return padded(cond, length), padded(uncond, length)


@dataclasses.dataclass
class Conditioning:
    """What a pipeline call takes: ``prompt_embeds`` etc., batch 1 (the caller repeats them).

    Args:
        prompt_embeds: the prompt's embeddings.
        negative_prompt_embeds: the negative prompt's, of the same length.
        pooled_prompt_embeds: SDXL's pooled prompt embedding, else None.
        negative_pooled_prompt_embeds: SDXL's pooled negative embedding, else None.
        prompt_length: how many of ``prompt_embeds``' tokens cross-attention may see (the rest is padding to
            mask); None: all of them.
        negative_length: the same for ``negative_prompt_embeds``.
        padded: whether a shorter text was padded and the padding is attended to (A1111's "Pad conds").
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    prompt_length: int | None = None
    negative_length: int | None = None
    padded: bool = False

    @property
    def masks_padding(self) -> bool:
        """Whether some of the tokens are padding that cross-attention must not see."""
        length = self.prompt_embeds.shape[1]
        return any(n is not None and n < length for n in (self.prompt_length, self.negative_length))

    def pipeline_kwargs(self, batch_size: int) -> dict:
        """The pipeline's keyword arguments for a batch.

        Args:
            batch_size: images per pipeline call; every tensor is repeated that many times.
        """

        def rep(t):
            return None if t is None else t.repeat(batch_size, *([1] * (t.dim() - 1)))

        kwargs = {"prompt_embeds": rep(self.prompt_embeds), "negative_prompt_embeds": rep(self.negative_prompt_embeds)}
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = rep(self.pooled_prompt_embeds)
            kwargs["negative_pooled_prompt_embeds"] = rep(self.negative_pooled_prompt_embeds)
        return kwargs


def paired(cond: torch.Tensor, uncond: torch.Tensor, empty, *, pad_cond_uncond: bool = False,
           pooled: torch.Tensor | None = None, pooled_uncond: torch.Tensor | None = None) -> Conditioning:
    """Prompt and negative prompt embeddings as one :class:`Conditioning`, the shorter padded when they differ.

    Args:
        cond: the prompt's embeddings, ``[1, 77 * n, dim]``.
        uncond: the negative prompt's, ``[1, 77 * m, dim]``.
        empty: a function giving the empty prompt's ``[1, 77, dim]`` encoding (called only to pad).
        pad_cond_uncond: A1111's "Pad prompt/negative prompt" (off by default): the padding is attended to.
            Off: it is masked, so each text is seen alone, as A1111 then runs them.
        pooled: SDXL's pooled prompt embedding.
        pooled_uncond: SDXL's pooled negative embedding.
    """
    if cond.shape[1] == uncond.shape[1]:
        return Conditioning(cond, uncond, pooled, pooled_uncond)
    lengths = (cond.shape[1], uncond.shape[1])
    cond, uncond = pad_to_same_length(cond, uncond, empty())
    if pad_cond_uncond:
        return Conditioning(cond, uncond, pooled, pooled_uncond, padded=True)
    return Conditioning(cond, uncond, pooled, pooled_uncond, prompt_length=lengths[0], negative_length=lengths[1])


def is_sdxl(pipe) -> bool:
    """Whether ``pipe`` has SDXL's two text encoders (and their tokenizers).

    Args:
        pipe: a diffusers pipeline.
    """
    return getattr(pipe, "text_encoder_2", None) is not None and getattr(pipe, "tokenizer_2", None) is not None


def sd_layer(architecture: str | None, clip_skip: int) -> EncoderLayer:
    """SD 1.x follows CLIP skip; SD 2.x ignores it in A1111 (its converted encoder already ends at the
    penultimate OpenCLIP layer).

    Args:
        architecture: ``'sd1'``, ``'sd2'``, ``'sd2-v'`` (or None: treated as SD 1.x).
        clip_skip: A1111's CLIP skip (1 = last layer).
    """
    if architecture in ("sd2", "sd2-v"):
        return EncoderLayer(skip=1)
    return EncoderLayer(skip=clip_skip)


@torch.no_grad()
def encode_sd(pipe, prompt: str, negative_prompt: str, *, clip_skip: int = 1,
              architecture: str | None = None, pad_cond_uncond: bool = False) -> Conditioning:
    """SD 1.x / 2.x conditioning for one prompt and its negative prompt.

    Args:
        pipe: an SD 1.x / 2.x pipeline.
        prompt: the prompt.
        negative_prompt: the negative prompt.
        clip_skip: A1111's CLIP skip (ignored on SD 2.x).
        architecture: the model's architecture (:func:`sd_layer`).
        pad_cond_uncond: A1111's "Pad prompt/negative prompt" (:func:`paired`).
    """
    layer = sd_layer(architecture, clip_skip)
    cond, _ = encode_prompt(pipe.text_encoder, pipe.tokenizer, prompt, layer)
    uncond, _ = encode_prompt(pipe.text_encoder, pipe.tokenizer, negative_prompt, layer)
    return paired(cond, uncond, lambda: encode_prompt(pipe.text_encoder, pipe.tokenizer, "", layer)[0],
                  pad_cond_uncond=pad_cond_uncond)


@torch.no_grad()
def _encode_sdxl_one(pipe, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    penultimate = EncoderLayer(skip=2, final_norm=False)
    z1, _ = encode_prompt(pipe.text_encoder, pipe.tokenizer, text, penultimate)
    z2, pooled = encode_prompt(pipe.text_encoder_2, pipe.tokenizer_2, text, penultimate)
    return torch.cat([z1, z2.to(z1.dtype)], dim=-1), pooled


@torch.no_grad()
def encode_sdxl(pipe, prompt: str, negative_prompt: str, *, pad_cond_uncond: bool = False) -> Conditioning:
    """SDXL conditioning: both encoders' penultimate layers side by side, pooled from the second.

    As A1111: CLIP skip is ignored, and an empty negative prompt is all zeros (embeddings and pooled).

    Args:
        pipe: an SDXL pipeline.
        prompt: the prompt.
        negative_prompt: the negative prompt.
        pad_cond_uncond: A1111's "Pad prompt/negative prompt" (:func:`paired`).
    """
    cond, pooled = _encode_sdxl_one(pipe, prompt)
    if negative_prompt == "":  # zeros the shape of the empty prompt's encoding (77 tokens), as A1111
        uncond, pooled_uncond = (torch.zeros_like(t) for t in _encode_sdxl_one(pipe, ""))
    else:
        uncond, pooled_uncond = _encode_sdxl_one(pipe, negative_prompt)
    return paired(cond, uncond, lambda: _encode_sdxl_one(pipe, "")[0], pad_cond_uncond=pad_cond_uncond,
                  pooled=pooled, pooled_uncond=pooled_uncond)


def encode(pipe, prompt: str, negative_prompt: str, *, clip_skip: int = 1,
           architecture: str | None = None, pad_cond_uncond: bool = False) -> Conditioning:
    """Conditioning for ``pipe``'s family (SDXL when it has two text encoders, else SD 1.x / 2.x).

    Args:
        pipe: the pipeline.
        prompt: the prompt, tags removed.
        negative_prompt: the negative prompt.
        clip_skip: A1111's CLIP skip (SD 1.x only).
        architecture: the model's architecture (``'sd2'``/``'sd2-v'`` ignore CLIP skip).
        pad_cond_uncond: A1111's "Pad prompt/negative prompt" (:func:`paired`).
    """
    if is_sdxl(pipe):
        return encode_sdxl(pipe, prompt, negative_prompt, pad_cond_uncond=pad_cond_uncond)
    return encode_sd(pipe, prompt, negative_prompt, clip_skip=clip_skip, architecture=architecture,
                     pad_cond_uncond=pad_cond_uncond)


@torch.no_grad()
def encode_texts(pipe, texts: Sequence[str], *, clip_skip: int = 1, architecture: str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Several prompts at once (what training feeds the UNet): ``(embeddings [N, L, dim], pooled [N, d] or None)``.

    Each text is encoded as :func:`encode` encodes a prompt (emphasis, 75-token chunks, CLIP skip, SDXL's two
    encoders); texts of different chunk counts are padded with the empty prompt's encoding, as A1111 pads a
    batch.

    Args:
        pipe: the pipeline.
        texts: the prompts.
        clip_skip: A1111's CLIP skip.
        architecture: the model's architecture.
    """
    if is_sdxl(pipe):
        pairs = [_encode_sdxl_one(pipe, text) for text in texts]
        empty = _encode_sdxl_one(pipe, "")[0] if len({z.shape[1] for z, _ in pairs}) > 1 else None
    else:
        layer = sd_layer(architecture, clip_skip)
        pairs = [encode_prompt(pipe.text_encoder, pipe.tokenizer, text, layer) for text in texts]
        empty = (encode_prompt(pipe.text_encoder, pipe.tokenizer, "", layer)[0]
                 if len({z.shape[1] for z, _ in pairs}) > 1 else None)
    embeds = [z for z, _ in pairs]
    if empty is not None:
        length = max(z.shape[1] for z in embeds)
        embeds = [pad_to_same_length(z, empty.repeat(1, length // empty.shape[1], 1), empty)[0] for z in embeds]
    pooled = [p for _, p in pairs]
    return torch.cat(embeds), (torch.cat(pooled) if all(p is not None for p in pooled) and is_sdxl(pipe) else None)


class ScheduledConditioning:
    """The conditioning of each UNet evaluation of one generation, following prompt editing.

    ``steps`` is what A1111 schedules over (:meth:`SamplerSpec.total_steps`: UNet evaluations). Every text the
    prompt's schedule reaches is encoded up front, once, as A1111 encodes a schedule: in one batch, so the texts
    with fewer chunks get empty-prompt chunks up to the longest (attended to, as in A1111); the same for the
    negative prompt's schedule. Each (prompt, negative prompt) pair the evaluations use is then made one
    :class:`Conditioning` by :func:`paired`. :meth:`at` only looks up; nothing changes after construction.

    Args:
        pipe: the pipeline whose encoders encode the texts.
        prompt: the prompt, tags removed (prompt editing is resolved here).
        negative_prompt: the negative prompt.
        steps: the UNet evaluations the schedules span.
        clip_skip: A1111's CLIP skip.
        architecture: the model's architecture.
        pad_cond_uncond: A1111's "Pad prompt/negative prompt" (:func:`paired`).
    """

    def __init__(self, pipe, prompt: str, negative_prompt: str, steps: int, *, clip_skip: int = 1,
                 architecture: str | None = None, pad_cond_uncond: bool = False):
        self.cond_schedule = prompt_schedule(prompt, steps)
        self.uncond_schedule = prompt_schedule(negative_prompt, steps)
        # past the last entry A1111 goes back to the first, so steps 0..steps cover every pair there is
        self._keys = [(index_at(self.cond_schedule, step), index_at(self.uncond_schedule, step))
                      for step in range(steps + 1)]
        options = {"clip_skip": clip_skip, "architecture": architecture}
        cond, pooled = encode_texts(pipe, [text for _, text in self.cond_schedule], **options)
        negatives = [text for _, text in self.uncond_schedule]
        uncond, pooled_uncond = encode_texts(pipe, negatives, **options)
        if is_sdxl(pipe) and all(text == "" for text in negatives):  # A1111: SDXL's empty negative is zeros
            uncond, pooled_uncond = torch.zeros_like(uncond), torch.zeros_like(pooled_uncond)

        @functools.cache
        def empty():  # encoded once, and only when some pair needs padding
            return encode_texts(pipe, [""], **options)[0]

        def row(tensor, index):
            return None if tensor is None else tensor[index:index + 1]

        self._conditionings = {
            key: paired(row(cond, key[0]), row(uncond, key[1]), empty, pad_cond_uncond=pad_cond_uncond,
                        pooled=row(pooled, key[0]), pooled_uncond=row(pooled_uncond, key[1]))
            for key in dict.fromkeys(self._keys)}

    @property
    def masks_padding(self) -> bool:
        """Whether some evaluation's prompt or negative prompt has padding to mask (:mod:`.padding`)."""
        return any(c.masks_padding for c in self._conditionings.values())

    @property
    def varies(self) -> bool:
        """Whether the conditioning changes during sampling."""
        return len(self._conditionings) > 1

    def key(self, step: int) -> tuple[int, int]:
        """Which (prompt, negative prompt) schedule entries evaluation ``step`` (0-based) uses.

        Args:
            step: the UNet evaluation, 0-based; out of range: the first evaluation's entries.
        """
        return self._keys[step] if 0 <= step < len(self._keys) else self._keys[0]

    def at(self, step: int) -> Conditioning:
        """The conditioning of UNet evaluation ``step`` (0-based), encoded up front.

        Args:
            step: the UNet evaluation, 0-based.
        """
        return self._conditionings[self.key(step)]
