"""The random SD 1.5 checkpoint as AUTOMATIC1111 needs it offline: beside it a ``NAME.yaml`` (its
``configs/v1-inference.yaml`` with the text encoder pointed at a local folder) and that folder (SD 1.5's CLIP text
config and CLIP's BPE tokenizer files, written from what the project ships). AUTOMATIC1111 would otherwise fetch
``openai/clip-vit-large-patch14`` from the hub; ``--do-not-download-clip`` builds the text model from the config
without weights (the checkpoint has them). ``../shared/hosts/README.md`` has the facts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENCODER = "      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder\n"


def write_clip_folder(folder: Path) -> Path:
    import sys

    sys.path.insert(0, str(ROOT))
    from extension.tokenizer import clip_vocab_and_merges

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "config.json").write_text((ROOT / "extension" / "configs" / "sd1" / "text_encoder" / "config.json")
                                        .read_text())
    (folder / "vocab.json").write_text(json.dumps(dict(vocab), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 77,
                                                              "tokenizer_class": "CLIPTokenizer"}))
    return folder


def a1111_checkpoint(tree: Path, checkpoint: Path, folder: Path) -> Path:
    """``folder/NAME.safetensors`` (a link to ``checkpoint``) with its ``NAME.yaml`` and the CLIP folder."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = write_clip_folder(folder / "clip-vit-large-patch14")
    config = (tree / "configs" / "v1-inference.yaml").read_text()
    assert ENCODER in config, "configs/v1-inference.yaml has no FrozenCLIPEmbedder"
    config = config.replace(ENCODER, ENCODER + f"      params:\n        version: {clip}\n")
    target = folder / checkpoint.name
    if not target.exists():
        os.symlink(checkpoint, target)
    target.with_suffix(".yaml").write_text(config)
    return target
