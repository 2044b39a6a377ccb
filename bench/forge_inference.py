"""The cost of a hypernetwork in Forge: Forge's own SD 1.5-shaped UNet module, bare, with the extension's attention
patch, and with AUTOMATIC1111's way (pre-hooks on every ``to_k`` / ``to_v``), in one run, in lockstep.

Run with Forge's Python from Forge's tree (the test set-up builds both, ``tests/hosts/host_env.py``)::

    cd FORGE && FORGE_VENV/bin/python /path/to/bench/forge_inference.py [--rounds 20] [--size 64]

Each round evaluates every configuration once, in turn (bare, ReLU patch, ReLU A1111, linear patch, linear folded
(what a generation with only affine networks gets: :mod:`extension.hosts.unet_fold`), linear A1111),
on a batch of 2 (cond + uncond) at ``--size`` pixels, under ``torch.inference_mode`` as Forge samples; the medians
of the per-round ratios to bare are written to ``bench/RESULTS.md`` (section ``forge-inference``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests" / "hosts")]
ARGS = sys.argv[1:]  # Forge's backend parses the command line when imported: the module below resets it
import forge_unet_equality as forge  # noqa: E402  (puts Forge's tree and the project on sys.path)

import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", "2")))
    options = parser.parse_args(ARGS)
    torch.set_num_threads(options.threads)
    from sections import write_section
    from tests.builders import make_hypernetwork
    from tests.hosts.patcher import OptionsPatcher

    from extension.hosts.unet_fold import with_folded_hypernetworks
    from extension.hosts.unet_patch import with_hypernetworks
    from extension.hypernetwork.reference import a1111_hooks

    unet, text = forge.forge_unet("sd1")
    widths = [320, 640, 768, 1280]
    relu = [(make_hypernetwork("relu", widths, seed=1), 1.0)]
    linear = [(make_hypernetwork("linear", widths, seed=2, activation_func=None), 1.0)]
    latent = options.size // 8
    x = torch.randn(2, 4, latent, latent)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, text)

    def patched(networks):
        options = with_hypernetworks(OptionsPatcher(), networks).model_options["transformer_options"]
        return lambda: unet(x, t, context, transformer_options=dict(options))

    def folded(networks):
        patcher = with_folded_hypernetworks(OptionsPatcher(diffusion_model=unet), networks)

        def run():
            with patcher.patched():  # as Forge sets a loaded clone's object patches
                return unet(x, t, context, transformer_options={})
        return run

    def hooked(networks):
        def run():
            with a1111_hooks(unet, networks):
                return unet(x, t, context, transformer_options={})
        return run

    configs = {"bare": lambda: unet(x, t, context, transformer_options={}),
               "relu patch": patched(relu), "relu A1111": hooked(relu),
               "linear patch": patched(linear), "linear folded": folded(linear), "linear A1111": hooked(linear)}
    times = {name: [] for name in configs}
    with torch.inference_mode():
        for name, run in configs.items():
            run()  # warm-up
        for _ in range(options.rounds):
            for name, run in configs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    rows = ["| configuration | median s / UNet call | median ratio to bare (paired by round) |", "|---|---|---|"]
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, times["bare"]))
        rows.append(f"| {name} | {statistics.median(values):.4f} | {ratio:.3f} |")
    text_out = (f"## Inference in Forge\n\nForge dfdcbab6's UNet module (SD 1.5 shapes, random weights), batch 2 at {options.size}x"
                f"{options.size} px, {options.rounds} rounds in lockstep, {options.threads} CPU threads, "
                f"torch {torch.__version__}. Networks: [1, 2, 1] at 320/640/768/1280, multiplier 1.\n\n"
                + "\n".join(rows) + "\n")
    print(text_out)
    write_section(BENCH / "RESULTS.md", "forge-inference", text_out)


if __name__ == "__main__":
    main()
