"""Forge's UNet with the extension's attention patch against Forge's UNet with AUTOMATIC1111's way, number for number.

Run with Forge's Python, from Forge's tree (``python tests/hosts/forge_unet_equality.py OUT.json``): the test
``tests/test_host_forge.py`` does. For each family the UNet is Forge's own module
(``backend.nn.unet.IntegratedUNet2DConditionModel``) built the way Forge's loader builds it: the shipped diffusers
config, random weights (seeded), converted to the original names with Forge's converter and read back through
``huggingface_guess``'s detection. Then, for the same latent, sigma and conditioning, under ``torch.inference_mode``
as Forge samples:

- ``bare``: the UNet alone;
- ``patched``: the UNet with :func:`extension.hosts.unet_patch.with_hypernetworks`'s patches in its
  ``transformer_options`` (what a patched clone hands the UNet);
- ``folded``: all-affine networks folded into the K/V projections (:mod:`extension.hosts.unet_fold`), against
  the reference with the same networks;
- ``reference``: the UNet with :func:`extension.hypernetwork.reference.a1111_hooks` (the context rewritten before
  ``to_k`` / ``to_v``, K into K, V into V, in self- and cross-attention), no patch.

SD 1.5 and SD 2.1 are at their real shapes; the SDXL UNet has SDXL's widths, text width (2048), pooled input and
linear projections, with one transformer block per level instead of 2 and 10 (the same code, a tenth of the
memory). Writes ``{family: {"max_abs_diff", "max_abs_reference", "max_abs_effect"}}``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FORGE = Path.cwd()
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(FORGE), str(FORGE / "packages_3rdparty"), str(FORGE / "repositories" / "huggingface_guess"),
                str(ROOT), str(Path(__file__).resolve().parent)]
OUT = Path(sys.argv[1]) if __name__ == "__main__" else None
sys.argv[1:] = ["--always-cpu"]  # Forge's backend reads its flags from the command line when imported

import torch  # noqa: E402

CONFIGS = {  # family: (shipped config, huggingface_guess's class for it)
    "sd1": ("runwayml/stable-diffusion-v1-5", "SD15"),
    "sd2": ("stabilityai/stable-diffusion-2-1", "SD20"),
}
# SDXL's UNet as huggingface_guess detects it from a real file, with one transformer block per level where SDXL has
# 2 and 10 (the converter used above handles SD 1.x/2.x layouts only, so its weights are made in place instead).
SDXL_SHAPED = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
               "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
               "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 1, 1, 1, 1],
               "channel_mult": [1, 2, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
               "context_dim": 2048, "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
               "use_temporal_attention": False, "use_temporal_resblock": False}


def build(unet_config: dict):
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.operations import using_forge_operations

    with using_forge_operations(device=torch.device("cpu"), dtype=torch.float32, manual_cast_enabled=False):
        return IntegratedUNet2DConditionModel.from_config(unet_config)


def forge_unet(family: str):
    """Forge's UNet module for ``family`` with seeded random weights, and the text width."""
    from huggingface_guess import model_list

    torch.manual_seed(0)
    if family == "sdxl":
        from backend.nn.unet import IntegratedUNet2DConditionModel

        unet_config = model_list.SDXL(dict(SDXL_SHAPED)).unet_config
        plain = IntegratedUNet2DConditionModel.from_config(unet_config)  # torch's own layers: shapes and init
        state = {}
        for name, tensor in plain.state_dict().items():  # norms 1, biases 0, weights N(0, 1/fan_in)
            if name.endswith("bias"):
                state[name] = torch.zeros(tensor.shape)
            elif tensor.ndim == 1:
                state[name] = torch.ones(tensor.shape)
            else:
                state[name] = torch.randn(tensor.shape) / tensor[0].numel() ** 0.5
        del plain
        unet = build(unet_config)
        missing, unexpected = unet.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (missing[:5], unexpected[:5])
        return unet.eval(), 2048
    from diffusers import UNet2DConditionModel
    from huggingface_guess.detection import detect_unet_config
    from huggingface_guess.diffusers_convert import convert_unet_state_dict

    repo, guess_class = CONFIGS[family]
    config = json.loads((FORGE / "backend" / "huggingface" / repo / "unet" / "config.json").read_text())
    state = convert_unet_state_dict(UNet2DConditionModel.from_config(config).state_dict())
    # What Forge's guess() hands its loader: the detected config with the family's extras.
    unet = build(getattr(model_list, guess_class)(detect_unet_config(state, "")).unet_config)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    return unet.eval(), config["cross_attention_dim"]


def main(out: Path) -> None:
    from unet_measure import measure

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    results = {}
    for family in os.environ.get("FAMILIES", "sd1,sd2,sdxl").split(","):
        unet, text = forge_unet(family)
        results[family] = measure(unet, text, with_y=family == "sdxl")
        del unet
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(OUT)
