"""Which text tokens cross-attention may see, when prompt and negative prompt differ in length.

AUTOMATIC1111 (with its default ``pad_cond_uncond`` off) runs the UNet on the prompt and on the negative prompt
separately when their chunk counts differ, each attending to its own tokens only. A diffusers pipeline batches
them: :func:`extension.prompt.conditioning.paired` pads the shorter with the empty prompt's encoding, and a
:class:`TextPadding` passed with the call (``cross_attention_kwargs={"text_padding": ...}``) masks that
padding out of every cross-attention layer (:class:`extension.hypernetwork.attention.HypernetworkAttnProcessor`
reads it). A masked key adds nothing to the softmax, so each row's attention is the unpadded one: A1111's
numbers, to float rounding, in one UNet call instead of two.
"""
from __future__ import annotations

import torch

KWARG = "text_padding"  # the processor parameter (and cross_attention_kwargs key) carrying a TextPadding


class TextPadding:
    """The valid text length of each row of one generation's UNet batch, for the step being sampled.

    The batch is diffusers' classifier-free-guidance batch: ``batch_size`` negative-prompt rows, then
    ``batch_size`` prompt rows (or only the prompt rows when guidance is off). Prompt editing can change the
    lengths between steps: :meth:`follow` is called with each step's conditioning, between UNet calls, by the
    one thread sampling this generation. Nothing here is shared with another request.

    Args:
        batch_size: images per pipeline call.
        conditioning: the first step's :class:`~extension.prompt.conditioning.Conditioning`.
    """

    def __init__(self, batch_size: int, conditioning) -> None:
        self.batch_size = int(batch_size)
        self._masks: dict[tuple, torch.Tensor] = {}
        self.follow(conditioning)

    def follow(self, conditioning) -> None:
        """Mask as ``conditioning`` says (its ``prompt_length`` / ``negative_length``) from the next UNet call on.

        Args:
            conditioning: the :class:`~extension.prompt.conditioning.Conditioning` the coming calls use.
        """
        self.lengths = (conditioning.negative_length, conditioning.prompt_length)

    def mask(self, context: torch.Tensor) -> torch.Tensor | None:
        """The additive attention mask for a text ``context`` ``[rows, tokens, dim]``: ``[rows, 1, tokens]`` in
        the context's dtype, 0 where a row may attend and ``-inf`` on its padding (the form every diffusers
        attention processor adds to its scores); None when every row sees all its tokens.

        Raises:
            ValueError: ``context`` has neither ``batch_size`` nor ``2 * batch_size`` rows.
        """
        rows, tokens = context.shape[0], context.shape[1]
        negative, prompt = (tokens if n is None else min(n, tokens) for n in self.lengths)
        if rows == 2 * self.batch_size:
            valid = (negative,) * self.batch_size + (prompt,) * self.batch_size
        elif rows == self.batch_size:
            valid = (prompt,) * self.batch_size
        else:
            raise ValueError(f"a text context of {rows} rows in a generation of batch size {self.batch_size}")
        if min(valid) == tokens:
            return None
        key = (valid, tokens, context.device, context.dtype)
        mask = self._masks.get(key)
        if mask is None:
            padding = torch.arange(tokens, device=context.device) >= torch.tensor(valid, device=context.device)[:, None]
            mask = torch.zeros(padding.shape, dtype=context.dtype, device=context.device)
            mask = mask.masked_fill(padding, float("-inf")).unsqueeze(1)
            self._masks[key] = mask
        return mask
