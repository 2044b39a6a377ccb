"""What the extension reads of the host's loaded model: its UNet module, its attention widths, its name and hash."""
from __future__ import annotations

import weakref

import torch

from ...hypernetwork.reference import attention_modules


def unet_module(sd_model) -> torch.nn.Module | None:
    """The UNet ``torch.nn.Module`` of a host's model object: Forge's ``forge_objects.unet.model.diffusion_model``,
    AUTOMATIC1111's ``model.diffusion_model``; None when neither (no model loaded, or another family)."""
    if sd_model is None:
        return None
    forge_objects = getattr(sd_model, "forge_objects", None)
    if forge_objects is not None and getattr(forge_objects, "unet", None) is not None:
        module = getattr(getattr(forge_objects.unet, "model", None), "diffusion_model", None)
        if isinstance(module, torch.nn.Module):
            return module
    module = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    return module if isinstance(module, torch.nn.Module) else None


# The widths of each UNet module seen, found once (a walk over its thousands of modules), forgotten with the module.
_widths: "weakref.WeakKeyDictionary[torch.nn.Module, frozenset[int]]" = weakref.WeakKeyDictionary()


def attention_widths(sd_model) -> set[int] | None:
    """Every context width the UNet's attentions read (``to_k.in_features``), or None without a UNet."""
    module = unet_module(sd_model)
    if module is None:
        return None
    widths = _widths.get(module)
    if widths is None:
        widths = _widths[module] = frozenset(attention.to_k.in_features for attention in attention_modules(module))
    return set(widths)


def checkpoint_name_and_hash(sd_model) -> tuple[str | None, str | None]:
    """The loaded checkpoint's name (its file stem) and short hash, as the host knows them."""
    info = getattr(sd_model, "sd_checkpoint_info", None)
    if info is None:
        return None, None
    name = getattr(info, "model_name", None)
    shorthash = getattr(info, "shorthash", None)
    return name, shorthash
