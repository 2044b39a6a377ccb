"""Stable Diffusion checkpoints: finding, recognising and loading them offline."""
