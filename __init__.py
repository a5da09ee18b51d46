"""Diff-Plugin for ComfyUI: restore rain, haze, snow, blur, moire, glare, low light and
faces with Task-Plugins on any SD 1.x checkpoint.

ComfyUI imports this file from custom_nodes/ as a package; the standalone library is `plugin_core`.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:  # imported outside ComfyUI (e.g. by pytest collecting the repo root)
    comfy_entrypoint = None
else:
    if __package__:  # as ComfyUI loads a pack: a package named after its folder
        from .nodes import comfy_entrypoint
    else:  # a plain module: pytest collecting the root of a clone whose folder name is no identifier (diff-plugin)
        comfy_entrypoint = None

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
