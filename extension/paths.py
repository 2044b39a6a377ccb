"""The project's folders, absolute (never relative to the working directory), as AUTOMATIC1111 lays them out.

Flags override each: ``--hypernetwork-dir``, ``--ckpt-dir``, ``--outdir``, ``--train-data-dir``.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
HYPERNETWORK_DIR = MODELS_DIR / "hypernetworks"
CKPT_DIR = MODELS_DIR / "Stable-diffusion"
OUTPUT_DIR = ROOT / "outputs"
SETTINGS_FILE = ROOT / "config.json"
SCRIPTS_DIR = ROOT / "scripts"
JAVASCRIPT_DIR = ROOT / "javascript"
STYLE_CSS = ROOT / "style.css"
TEMPLATES_DIR = ROOT / "textual_inversion_templates"  # AUTOMATIC1111's folder name for prompt templates
