"""Forge Classic's UNet with the extension's attention patch (and fold) against AUTOMATIC1111's way, number for number.

Run with Classic's Python, from Classic's tree (``python tests/hosts/classic_unet_equality.py OUT.json CKPT``): the
test ``tests/test_host_forge_classic.py`` does. The UNet is Classic's own module
(``ldm_patched.ldm.modules.diffusionmodules.openaimodel.UNetModel``), built the way Classic's loader builds it: the
random SD 1.5 checkpoint's UNet keys (at the real shapes), detected by ``ldm_patched.modules.model_detection``, made
by the detected config's ``get_model`` and loaded in fp32. :func:`unet_measure.measure` then compares the ways.
Writes ``{"sd1": {"max_abs_diff", "max_abs_reference", "max_abs_effect", "folded_...", "restored"}}``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CLASSIC = Path.cwd()
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(CLASSIC), str(ROOT), str(Path(__file__).resolve().parent)]
OUT, CHECKPOINT = (Path(a) for a in sys.argv[1:3])
sys.argv[1:] = ["--always-cpu"]  # Classic's backend reads its flags from the command line when imported

import torch  # noqa: E402

PREFIX = "model.diffusion_model."


def classic_unet(checkpoint: Path) -> tuple[torch.nn.Module, int]:
    from ldm_patched.modules import args_parser

    args_parser.args, _ = args_parser.parser.parse_known_args()  # as Classic's initialisation does: --always-cpu
    from ldm_patched.modules import model_detection
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(checkpoint)).items() if k.startswith(PREFIX)}
    config = model_detection.model_config_from_unet(state, PREFIX, torch.float32)
    assert config is not None and type(config).__name__ == "SD15", config
    model = config.get_model(state, PREFIX, device=torch.device("cpu"))
    model.load_model_weights(state, PREFIX)
    unet = model.diffusion_model.float().eval()
    return unet, unet.input_blocks[1][1].transformer_blocks[0].attn2.to_k.in_features


def main() -> None:
    from unet_measure import measure

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    unet, text = classic_unet(CHECKPOINT)
    OUT.write_text(json.dumps({"sd1": measure(unet, text)}, indent=1))


if __name__ == "__main__":
    main()
