"""The hypernetworks script, for every host that loads ``scripts/*.py``.

- The standalone host (``python launch.py``) calls ``register(callbacks)``: the cards, settings and hooks of
  :mod:`extension.ui.hypernetworks_script`.
- Forge and the AUTOMATIC1111 family import this file as a script (again on every "Reload UI"): it registers
  the host wing (:mod:`extension.hosts.webui`) with the host's callbacks, and the host finds the always-on
  ``HypernetworkScript`` in this module's names.
"""
from extension.hosts.detect import running_host

if running_host() is None:
    from extension.ui.hypernetworks_script import register  # noqa: F401
else:
    from extension.hosts.webui.script import HypernetworkScript  # noqa: F401 - found here by the host
    from extension.hosts.webui.register import register_with_host

    register_with_host()
