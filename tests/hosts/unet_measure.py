"""One host UNet module, number for number: bare, with the extension's attention patch, with affine networks folded
into its projections, and with AUTOMATIC1111's way (pre-hooks on every ``to_k`` / ``to_v``). Shared by the Forge and
Forge Classic equality scripts (``forge_unet_equality.py``, ``classic_unet_equality.py``), which build the module the
way their host's loader does and run in the host's venv.

For the same latent, sigma and conditioning, under ``torch.inference_mode`` as the hosts sample:

- ``patched`` (a ReLU network then a linear one, :func:`extension.hosts.unet_patch.with_hypernetworks`) against
  ``reference`` (the same networks through :func:`extension.hypernetwork.reference.a1111_hooks`);
- ``folded`` (two affine networks, :func:`extension.hosts.unet_fold.with_folded_hypernetworks`, set on the module
  as the host sets a loaded clone's object patches) against the hooks with those networks; ``restored``: every
  module is the model's own again after.
"""
from __future__ import annotations

import torch


def measure(unet: torch.nn.Module, text: int, *, with_y: bool = False) -> dict:
    from extension.hosts.unet_fold import with_folded_hypernetworks
    from extension.hosts.unet_patch import with_hypernetworks
    from extension.hypernetwork.reference import a1111_hooks
    from tests.builders import make_hypernetwork
    from tests.hosts.patcher import OptionsPatcher

    widths = sorted({unet.model_channels * m for m in (1, 2, 4)} | {text})
    networks = [(make_hypernetwork("relu", widths, seed=1), 0.8),
                (make_hypernetwork("linear", widths, seed=2, activation_func=None), -0.5)]
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, text, generator=generator)
    extra = {}
    if with_y:
        extra["y"] = torch.randn(2, unet.label_emb[0][0].in_features, generator=generator)

    def run(options=None):
        return unet(x, timesteps, context, transformer_options=dict(options or {}), **extra)

    patched_options = with_hypernetworks(OptionsPatcher(), networks).model_options["transformer_options"]
    with torch.inference_mode():
        bare = run()
        patched = run(patched_options)
        with a1111_hooks(unet, networks):
            reference = run()
    linear = [(make_hypernetwork("linear_a", widths, seed=4, activation_func=None), 0.7),
              (make_hypernetwork("linear_b", widths, seed=5, activation_func=None, layer_structure=[1, 2, 1]), -0.4)]
    folding = with_folded_hypernetworks(OptionsPatcher(diffusion_model=unet), linear)
    originals = list(unet.modules())
    with torch.inference_mode():
        with folding.patched():
            folded = run()
        with a1111_hooks(unet, linear):
            folded_reference = run()
    return {
        "max_abs_diff": float((patched - reference).abs().max()),
        "max_abs_reference": float(reference.abs().max()),
        "max_abs_effect": float((reference - bare).abs().max()),
        "folded_max_abs_diff": float((folded - folded_reference).abs().max()),
        "folded_max_abs_reference": float(folded_reference.abs().max()),
        "folded_max_abs_effect": float((folded_reference - bare).abs().max()),
        "folded_layers": len(folding.object_patches),
        "restored": list(unet.modules()) == originals,
        "widths": widths,
    }
