"""Rules of the house that a reader cannot see break: checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_nodes_take_comfyuis_node_api_from_one_versioned_import():
    """Only nodes/api.py imports comfy_api, and it asks for the versioned module first."""
    users = {path.name for path in (REPO / "nodes").glob("*.py")
             if any(name == "comfy_api" or name.startswith("comfy_api.") for name in imported_modules(path))}
    assert users == {"api.py"}
    assert "comfy_api.v0_0_2" in imported_modules(REPO / "nodes" / "api.py")
