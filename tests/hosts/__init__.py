"""Real host web UIs for the host-adapter tests: unpacked from ``../shared/hosts/``, each in a venv of its own."""
