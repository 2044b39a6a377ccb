"""The hypernetwork: its modules, files and the attention processor that applies it."""
