"""The adapter for the AUTOMATIC1111 family of web UIs, written against Forge (lllyasviel's, ``backend/``).

What each module adapts (the host's objects in, the core's plain values out):

- ``folder``: the hypernetworks folder (the host's ``--hypernetwork-dir`` where it has one, else ours, added by
  ``preload.py``) and the one :class:`~extension.library.HypernetworkLibrary` over it;
- ``network``: the ``hypernet`` extra network: tags -> loaded networks, kept on the processing object ``p``;
- ``script``: the always-on script whose ``process_before_every_sampling`` puts them on a clone of the UNet
  patcher (:mod:`extension.hosts.unet_patch`);
- ``page``: the Hypernetworks cards among the host's extra-network tabs;
- ``settings``: "Add hypernetwork to prompt", listing every file;
- ``routes``: ``/sdapi/v1`` hypernetwork routes, behind the host's ``--api-auth``;
- ``register``: what ``scripts/hypernetworks.py`` calls on every (re)load of the scripts.

Imports of the host (``modules.*``) happen only here, inside functions or at module level of these files, which
are imported only when a host runs us (``extension.hosts.detect``). Nothing from ``modules.hypernetworks``,
``shared.hypernetworks`` or ``cmd_opts.hypernetwork_dir``'s existence is assumed: Forge Classic and Neo removed
them.
"""
