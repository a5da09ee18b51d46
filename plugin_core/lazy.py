"""Lazy re-exports: a package names its public API without importing the modules behind it,
so what does not need diffusers (images, formats, the selector, synthetic data) loads without it.
Beside its map, each package imports the same names under `if TYPE_CHECKING:` (never run), which
editors and static tools follow; tests/test_imports.py keeps the two alike."""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, namespace: dict, exports: dict[str, str]):
    """A module `__getattr__` that imports `name` from `package.<exports[name]>` on first use."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
