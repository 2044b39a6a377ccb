"""The hypernetwork: its structure, its modules, its files, and the attention processor that applies it.

- :mod:`.config`: :class:`HypernetworkConfig`, the validated structure and AUTOMATIC1111's defaults;
- :mod:`.modules`: AUTOMATIC1111's :class:`HypernetworkModule` and :class:`Hypernetwork`;
- :mod:`.files`: ``.pt`` / ``.safetensors`` / ``.optim`` reading and writing;
- :mod:`.attention`: the per-call attention processor;
- :mod:`.folding`: linear (affine) modules collapsed to one map and folded into ``to_k`` / ``to_v`` per generation.
"""
from .config import HypernetworkConfig, activation_classes, parse_dropout_structure
from .files import HypernetworkInfo, read_info
from .modules import Hypernetwork, HypernetworkModule, apply_hypernetworks, load_hypernetwork

__all__ = ["Hypernetwork", "HypernetworkConfig", "HypernetworkInfo", "HypernetworkModule", "activation_classes",
           "apply_hypernetworks", "load_hypernetwork", "parse_dropout_structure", "read_info"]
