"""Errors raised by plugin_core. All are ValueErrors so callers can catch one type."""


class PluginError(ValueError):
    """Base class for every problem plugin_core reports to a user."""


class PluginFileError(PluginError):
    """A plugin or selector file is missing, truncated, unsafe or not what it claims to be."""


class PluginMismatchError(PluginError):
    """A plugin does not fit the base model or CLIP vision model it is used with."""


class InputImageError(PluginError):
    """An input image cannot be processed (unreadable, empty, NaN, ...)."""


class DataError(InputImageError):
    """Training or evaluation data that cannot be used (missing files, unmatched names, ...)."""
