"""The CLIP tokenizer, built offline from the BPE vocabulary shipped in ``extension/assets/clip``.

Same algorithm as OpenAI CLIP / open_clip's ``SimpleTokenizer``: the 256 byte symbols, the same with
``</w>``, one entry per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

BPE_PATH = Path(__file__).resolve().parent / "assets" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@functools.cache
def clip_vocab_and_merges() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """``(vocab items, merges)`` of the 49408-token CLIP vocabulary (read once, immutable)."""
    lines = gzip.decompress(BPE_PATH.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return tuple((token, i) for i, token in enumerate(vocab)), tuple(merges)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A fresh ``CLIPTokenizer`` (SD 1.x pads with ``<|endoftext|>``, SD 2.x and SDXL's second encoder with ``!``)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_LENGTH,
                         bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                         pad_token=pad_token)
