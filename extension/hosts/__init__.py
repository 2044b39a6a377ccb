"""The host wing: adapters that let the project live inside another web UI as an extension.

The core (``extension/`` outside ``ui``, ``api``, ``demo`` and this package) never imports a host, nor this
package. Each adapter takes the host's objects (its processing object, its UNet patcher, its options, its
FastAPI app) and hands the core plain values: names and multipliers in, ``Hypernetwork`` objects and messages
out. ``detect`` says which host, if any, runs this process; ``webui`` is the adapter for the AUTOMATIC1111
family (Forge today; see docs/ARCHITECTURE.md, "The host wing").
"""
