"""The optional libraries the metrics stand on: each is imported when a metric first needs it,
and a missing one is one message saying what to install (the `metrics` extra holds them all)."""

from __future__ import annotations

from importlib import import_module

from ..errors import PluginError

INSTALL = "pip install 'diff-plugin[metrics]' (or, in ComfyUI, pip install -r custom_nodes/diff-plugin/requirements.txt)"


class MissingLibraryError(PluginError):
    """A metric's library is not installed."""


def need(module: str, package: str, what: str):
    """`import module`, or a MissingLibraryError naming the package and what needs it."""
    try:
        return import_module(module)
    except ImportError as error:
        raise MissingLibraryError(f"{what}: the Python package '{package}' is needed and does not import here ({error}); "
                                  f"install it: {INSTALL}") from None
