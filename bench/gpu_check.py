"""Correctness on CUDA (run on a GPU machine; not part of the suite): writes bench/RESULTS-gpu.md.

1. The demo model in fp16 on CUDA with ``<hypernet:demo:1>``: finite images, close to the same generation
   in fp32 on the CPU, and the tag changes them (multiplier 0 gives exactly the image without it).
2. The attention patch on the fp16 UNet equals the hand-made reference (forward pre-hooks on to_k/to_v).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from extension.hypernetwork.attention import ActiveHypernetworks, install_hypernetwork_processors  # noqa: E402
from extension.library import HypernetworkLibrary  # noqa: E402
from extension.checkpoints import ModelManager  # noqa: E402
from extension.demo.pretrained import builtin_model  # noqa: E402
from extension.paths import CKPT_DIR  # noqa: E402
from extension.processing import Txt2ImgRequest, txt2img  # noqa: E402


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.float32) for im in result.images])


def generate(model, library, prompt):
    request = Txt2ImgRequest(prompt=prompt, steps=20, seed=11, batch_size=4, width=64, height=64, cfg_scale=5)
    return txt2img(request, model, library)


def hooked_reference(unet, hn, multiplier, sample, t, context):
    handles = []
    for name, module in unet.named_modules():
        if name.endswith(("attn1", "attn2")):
            for which, linear in ((0, module.to_k), (1, module.to_v)):
                def hook(mod, args, which=which):
                    pair = hn.layers.get(args[0].shape[-1])
                    return (pair[which](args[0], multiplier),) if pair else None
                handles.append(linear.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            return unet(sample, t, context).sample
    finally:
        for handle in handles:
            handle.remove()


def main() -> int:
    lines = ["# GPU check", "", f"{torch.cuda.get_device_name()}, torch {torch.__version__}", ""]
    library = HypernetworkLibrary(ROOT / "models" / "hypernetworks")
    cpu = ModelManager(CKPT_DIR, device="cpu", precision="fp32", builtin=builtin_model()).current
    a_cpu = pixels(generate(cpu, library, "a red circle on a blue background <hypernet:demo:1>"))
    gpu = ModelManager(CKPT_DIR, device="cuda", precision="fp16", builtin=builtin_model()).current
    plain = generate(gpu, library, "a red circle on a blue background")
    zero = generate(gpu, library, "a red circle on a blue background <hypernet:demo:0>")
    tagged = generate(gpu, library, "a red circle on a blue background <hypernet:demo:1>")
    a_gpu = pixels(tagged)
    lines += [
        f"- demo model, fp16 on CUDA, 4 images of 64x64, 20 steps: finite: {bool(np.isfinite(a_gpu).all())}; "
        f"messages: {tagged.messages or 'none'}",
        f"- multiplier 0 equals no tag exactly: {bool((pixels(zero) == pixels(plain)).all())}",
        f"- the tag changes the images: mean |diff| {np.abs(a_gpu - pixels(plain)).mean():.2f} (0-255 scale)",
        f"- fp16 CUDA vs fp32 CPU, same seeds, with the tag: mean |diff| {np.abs(a_gpu - a_cpu).mean():.2f}, "
        f"against {np.abs(pixels(plain) - a_cpu).mean():.2f} between the CPU image with and without the tag",
    ]
    unet = gpu.pipe.unet
    hn = library.load("demo").for_inference("cuda", torch.float16)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 16, 16, generator=generator).to("cuda", torch.float16)
    context = torch.randn(2, 77, 48, generator=generator).to("cuda", torch.float16)
    for multiplier in (1.0, 0.5, -0.7):
        reference = hooked_reference(unet, hn, multiplier, sample, 500, context)
        install_hypernetwork_processors(unet)
        with torch.no_grad():
            patched = unet(sample, 500, context,
                           cross_attention_kwargs={"hypernetworks": ActiveHypernetworks([(hn, multiplier)])}).sample
        diff = (patched.float() - reference.float()).abs().max().item()
        lines.append(f"- attention patch vs pre-hook reference, fp16 UNet, multiplier {multiplier}: max |diff| {diff:.2e}")
    report = "\n".join(lines) + "\n"
    (ROOT / "bench" / "RESULTS-gpu.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
