"""ComfyUI's node API, imported in this one place: the versioned `comfy_api.v0_0_2`, which ComfyUI
keeps backward compatible for custom nodes while `comfy_api.latest` moves with the host; `latest`
only on a host that has no versioned module."""

from __future__ import annotations

try:
    from comfy_api.v0_0_2 import ComfyAPI, ComfyExtension, io
except ImportError:  # pragma: no cover - a host without the versioned API
    from comfy_api.latest import ComfyAPI, ComfyExtension, io

__all__ = ["ComfyAPI", "ComfyExtension", "io"]
