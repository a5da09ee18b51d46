"""Diff-Plugin for ComfyUI: restore rain, haze, snow, blur, moire, glare, low light and
faces with Task-Plugins on any SD 1.x checkpoint.

ComfyUI imports this file from custom_nodes/; the standalone library is `plugin_core`.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:  # imported outside ComfyUI (e.g. by pytest collecting the repo root)
    comfy_entrypoint = None
else:
    from .nodes import comfy_entrypoint

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
