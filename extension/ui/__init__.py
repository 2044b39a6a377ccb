"""The Gradio host (``app``), its state (``state``), the script API (``callbacks``), the txt2img tab
(``txt2img``), the hypernetwork cards (``cards``) and the strength-comparison grid (``comparison``)."""
