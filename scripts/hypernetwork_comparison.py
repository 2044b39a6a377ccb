"""The "Hypernetwork strength comparison" txt2img script of the standalone host (:mod:`extension.ui.comparison_script`).

In Forge and the AUTOMATIC1111 family this file registers nothing: those hosts have their own X/Y/Z plot, whose
"Prompt S/R" does the same with ``<hypernet:NAME:M>``.
"""
from extension.hosts.detect import running_host

if running_host() is None:
    from extension.ui.comparison_script import register  # noqa: F401
