"""The surface of a Forge-family UNet patcher that :mod:`extension.hosts.unet_patch` and
:mod:`extension.hosts.unet_fold` use, for tests and benchmarks that run a host's UNet module directly.

Behaves as Forge's ``ModelPatcher`` does for these calls (``backend/patcher/base.py``): ``clone()`` deep-copies
``model_options`` and copies ``object_patches`` (shallow), the two attention-patch setters, ``add_object_patch``;
:meth:`OptionsPatcher.patched` sets the object patches on the model and puts the originals back, as the host does
when it loads and unloads a clone."""
from __future__ import annotations

import contextlib
import copy
import types


def _parent(root, name: str):
    *path, last = name.split(".")
    for part in path:
        root = getattr(root, part)
    return root, last


class OptionsPatcher:
    def __init__(self, options: dict | None = None, diffusion_model=None):
        self.model_options = options if options is not None else {"transformer_options": {}}
        self.model = types.SimpleNamespace(diffusion_model=diffusion_model) if diffusion_model is not None else None
        self.object_patches: dict = {}

    def clone(self) -> "OptionsPatcher":
        twin = OptionsPatcher(copy.deepcopy(self.model_options))
        twin.model = self.model
        twin.object_patches = self.object_patches.copy()
        return twin

    def _add(self, name: str, patch) -> None:
        patches = self.model_options["transformer_options"].setdefault("patches", {})
        patches[name] = patches.get(name, []) + [patch]

    def set_model_attn1_patch(self, patch) -> None:
        self._add("attn1_patch", patch)

    def set_model_attn2_patch(self, patch) -> None:
        self._add("attn2_patch", patch)

    def add_object_patch(self, name: str, obj) -> None:
        self.object_patches[name] = obj

    @contextlib.contextmanager
    def patched(self):
        """The object patches set on the model for the block, the originals back after."""
        backup = {}
        try:
            for name, obj in self.object_patches.items():
                parent, last = _parent(self.model, name)
                backup[name] = getattr(parent, last)
                setattr(parent, last, obj)
            yield self.model
        finally:
            for name, obj in backup.items():
                parent, last = _parent(self.model, name)
                setattr(parent, last, obj)
