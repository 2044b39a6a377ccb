"""The surface of a Forge-family UNet patcher that :func:`extension.hosts.unet_patch.with_hypernetworks` uses
(``clone()`` deep-copying ``model_options``, the two attention-patch setters), for tests and benchmarks that run a
host's UNet module directly. Behaves as Forge's ``ModelPatcher`` does for these calls (``backend/patcher/base.py``)."""
from __future__ import annotations

import copy


class OptionsPatcher:
    def __init__(self, options: dict | None = None):
        self.model_options = options if options is not None else {"transformer_options": {}}

    def clone(self) -> "OptionsPatcher":
        return OptionsPatcher(copy.deepcopy(self.model_options))

    def _add(self, name: str, patch) -> None:
        patches = self.model_options["transformer_options"].setdefault("patches", {})
        patches[name] = patches.get(name, []) + [patch]

    def set_model_attn1_patch(self, patch) -> None:
        self._add("attn1_patch", patch)

    def set_model_attn2_patch(self, patch) -> None:
        self._add("attn2_patch", patch)
