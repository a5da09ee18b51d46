"""Optional Python packages: every node loads without them; the node that needs one says
which is missing and how to install it, when it runs."""

from __future__ import annotations

import importlib

INSTALL_HINT = "install the pack's requirements with ComfyUI's own Python: pip install -r custom_nodes/diff-plugin/requirements.txt"


def require(package: str, purpose: str, hint: str = INSTALL_HINT):
    """Import `package` or raise an error naming it, what needs it, and the fix."""
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise RuntimeError(f"Diff-Plugin: {purpose} needs the Python package '{package}', which does not import here "
                           f"({error}); {hint}") from None
