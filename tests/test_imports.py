"""The import rules of the house, checked on the source itself (ast; no ComfyUI, no torch):

* plugin_core never imports ComfyUI, nor the nodes that adapt it;
* nodes/ imports from plugin_core only names a package exports (`__all__` / `_EXPORTS` of
  plugin_core or of one of its packages), never a module behind them;
* no module of plugin_core imports from a higher layer (LAYERS, as docs/architecture.md draws it),
  and no two modules import each other, by any path (imports inside functions count too);
* each package's lazy exports (`_EXPORTS`) and its `if TYPE_CHECKING:` imports name the same names
  from the same modules, so that editors and static tools follow what the lazy map hides, and
  `import plugin_core` still imports no torch.

Each failure names the file, the line and the rule broken."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "plugin_core"
NODES = REPO / "nodes"

# ComfyUI's top-level modules and packages (the host): plugin_core runs without ComfyUI.
COMFYUI = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "execution", "folder_paths", "latent_preview",
           "node_helpers", "nodes", "server"}

# plugin_core's layers, lowest first: a module may import from its own layer and the layers below it,
# never from one above. A name is a top-level module or package of plugin_core; "__init__" is
# plugin_core itself, the public API that names what the layers below export.
LAYERS = (
    ("errors", "lazy", "vocabulary", "options", "formats", "launch"),  # plain Python: no torch
    ("images", "colorfix", "tiling", "seeding", "outputs"),  # pixels and files
    ("models",),  # the Task-Plugin
    ("base", "selector"),  # the frozen SD base; the Plugin-Selector
    ("restore",),  # the one restore engine
    ("training", "evaluation", "synthetic"),  # what uses restoring: training, measuring, synthetic pairs
    ("__init__",),  # plugin_core: the public API
    ("cli", "__main__"),  # the command line
)
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


# ---------------------------------------------------------------------- reading the source


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def module_parts(path: Path) -> tuple[str, ...]:
    """A file's module, as parts from the repository root: plugin_core/models/__init__.py -> ("plugin_core", "models")."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def is_module(parts: tuple[str, ...]) -> bool:
    folder = REPO.joinpath(*parts)
    return folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file()


def in_type_checking(node: ast.AST, parents: dict) -> bool:
    """Whether `node` lies in an `if TYPE_CHECKING:` block (imported for static tools only)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


class Import(NamedTuple):
    line: int
    module: tuple[str, ...]  # as parts from the repository root: a relative import resolved, an absolute one as written
    names: tuple[str, ...]  # () for `import x`
    relative: bool
    static: bool  # in an `if TYPE_CHECKING:` block: for static tools only, never run


@cache
def imports(path: Path) -> tuple[Import, ...]:
    """Every import of a file, at any depth (inside functions too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module_parts(path) if path.name == "__init__.py" else module_parts(path)[:-1]
    found = []
    for node in ast.walk(tree):
        static = in_type_checking(node, parents)
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, tuple(alias.name.split(".")), (), False, static) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            module = base + (tuple(node.module.split(".")) if node.module else ())
            found.append(Import(node.lineno, module, tuple(alias.name for alias in node.names), node.level > 0, static))
    return tuple(sorted(found))


def core_targets(found: Import) -> list[tuple[str, ...]]:
    """The plugin_core modules an import brings in: `from plugin_core import images` the module
    images, `from plugin_core.models import PluginMix` the package models."""
    if found.module[:1] != ("plugin_core",):
        return []
    submodules = [found.module + (name,) for name in found.names if is_module(found.module + (name,))]
    return submodules + ([found.module] if len(submodules) < len(found.names) or not found.names else [])


def layer_of(parts: tuple[str, ...]) -> str:
    """The layer name of a plugin_core module: its top-level module or package under plugin_core."""
    return parts[1] if len(parts) > 1 else "__init__"


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


# ---------------------------------------------------------------------- plugin_core and its host


def test_plugin_core_never_imports_comfyui_nor_the_nodes():
    broken = []
    for path in python_files(CORE):
        for found in imports(path):
            if not found.relative and found.module[0] in COMFYUI:
                broken.append(f"{where(path, found.line)}: imports {'.'.join(found.module)}: plugin_core never imports ComfyUI")
            elif found.relative and found.module[:1] != ("plugin_core",):
                broken.append(f"{where(path, found.line)}: imports {'.'.join(found.module) or 'the pack'} from outside "
                              "plugin_core: plugin_core never imports the nodes (nodes/, the pack's __init__)")
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------------- nodes/: the public API only


@cache
def exports(package: tuple[str, ...]) -> frozenset[str]:
    """What a package of plugin_core exports: its `__all__` and the keys of its `_EXPORTS`."""
    init = REPO.joinpath(*package, "__init__.py")
    names = set()
    for node in ast.parse(init.read_text(), filename=str(init)).body:
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else []
        if {"__all__", "_EXPORTS"} & set(targets):
            if isinstance(node.value, ast.Dict):
                names.update(key.value for key in node.value.keys)
            elif isinstance(node.value, (ast.List, ast.Tuple)):
                names.update(item.value for item in node.value.elts)
    return frozenset(names)


def test_the_nodes_import_only_what_plugin_cores_packages_export():
    broken = []
    for path in python_files(NODES):
        for found in imports(path):
            if found.module[:1] != ("plugin_core",):
                continue
            package = REPO.joinpath(*found.module, "__init__.py")
            if not package.is_file():
                broken.append(f"{where(path, found.line)}: imports from {'.'.join(found.module)}, a module behind plugin_core's "
                              "API: the nodes import only what plugin_core or one of its packages exports")
                continue
            hidden = sorted(set(found.names) - exports(found.module))
            if hidden or not found.names:
                broken.append(f"{where(path, found.line)}: imports {', '.join(hidden) or 'a package'} from "
                              f"{'.'.join(found.module)}, which does not export it: the nodes import only names that "
                              "plugin_core's packages export (add it to the package's _EXPORTS, or import it from the "
                              "package that does)")
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------------- no arrow back up


def test_the_layers_name_every_module_of_plugin_core():
    """Each top-level module and package of plugin_core has its layer (a new one is placed on purpose)."""
    names = {layer_of(module_parts(path)) for path in python_files(CORE) if path.parent == CORE or path.name == "__init__.py"}
    assert names == set(LAYER), f"not in LAYERS: {sorted(names - set(LAYER))}; gone: {sorted(set(LAYER) - names)}"


def test_no_module_of_plugin_core_imports_from_a_higher_layer():
    broken = []
    for path in python_files(CORE):
        source = layer_of(module_parts(path))
        for found in imports(path):
            for target in core_targets(found):
                if LAYER.get(layer_of(target), -1) > LAYER.get(source, len(LAYERS)):  # one not in LAYERS: the test above
                    broken.append(f"{where(path, found.line)}: {source} imports {'.'.join(target)}, a higher layer "
                                  f"({layer_of(target)} is above {source}): no module imports upward "
                                  "(tests/test_imports.py LAYERS)")
    assert not broken, "\n".join(broken)


def import_graph() -> dict[tuple[str, ...], dict[tuple[str, ...], str]]:
    """plugin_core's modules -> the modules each imports when it runs (not what `if TYPE_CHECKING:`
    names) -> where."""
    graph = {}
    for path in python_files(CORE):
        edges = graph.setdefault(module_parts(path), {})
        for found in imports(path):
            for target in core_targets(found) if not found.static else ():
                edges.setdefault(target, where(path, found.line))
    return graph


def test_no_two_modules_of_plugin_core_import_each_other():
    """No circle of imports, however long (the lazy exports of a package's __init__ are no import)."""
    graph, broken, done = import_graph(), [], set()

    def visit(module, path):
        if module in path:
            circle = path[path.index(module):] + [module]
            broken.append("; ".join(f"{graph[a][b]} imports {'.'.join(b)}" for a, b in itertools.pairwise(circle))
                          + ": a circle; no two modules import each other, by any path")
            return
        if module in done:
            return
        for target in graph.get(module, {}):
            visit(target, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------------- lazy exports that tools can follow


PACKAGES = sorted(module_parts(path) for path in python_files(CORE)
                  if path.name == "__init__.py" and "_EXPORTS" in path.read_text())


def lazy_map(package: tuple[str, ...]) -> tuple[dict[str, str], int]:
    """A package's `_EXPORTS` (name -> its module, relative to the package) and the line of the map."""
    init = REPO.joinpath(*package, "__init__.py")
    for node in ast.parse(init.read_text(), filename=str(init)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return {key.value: value.value for key, value in zip(node.value.keys, node.value.values)}, node.lineno
    raise AssertionError(f"{init.relative_to(REPO)}: no _EXPORTS map")


def bound_names(path: Path) -> set[str]:
    """The names a module binds at its top level (in `if` and `try` blocks too)."""
    names, statements = set(), list(ast.parse(path.read_text(), filename=str(path)).body)
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):
            statements += node.body + node.orelse + getattr(node, "finalbody", []) + [
                s for handler in getattr(node, "handlers", []) for s in handler.body]
    return names


@pytest.mark.parametrize("package", PACKAGES, ids=lambda parts: ".".join(parts))
def test_the_type_checking_imports_name_what_the_lazy_map_names(package):
    """Go-to-definition follows the `if TYPE_CHECKING:` imports; the package loads by `_EXPORTS`: the
    same names from the same modules, each bound there."""
    init = REPO.joinpath(*package, "__init__.py")
    exported, line = lazy_map(package)
    static = {}
    for found in imports(init):
        if found.static:
            module = found.module[len(package):]
            static.update({name: ".".join(module) for name in found.names if len(found.module) > len(package)})
    where_ = where(init, line)
    assert static == exported, (
        f"{where_}: _EXPORTS and the `if TYPE_CHECKING:` imports differ: only in _EXPORTS "
        f"{sorted(set(exported) - set(static))}, only imported {sorted(set(static) - set(exported))}, from other modules "
        f"{sorted(n for n in set(static) & set(exported) if static[n] != exported[n])}: the lazy map and its static "
        "imports name the same names from the same modules")
    for name, module in exported.items():
        file = REPO.joinpath(*package, *module.split("."))
        file = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
        assert name in bound_names(file), f"{where_}: {name} is not bound in {file.relative_to(REPO)}: each exported name exists"


def test_importing_plugin_core_and_its_packages_imports_no_torch():
    """The lazy exports keep start-up fast: plugin_core and its packages load without torch (so do
    the settings and the vocabulary, which the command line reads before any work)."""
    modules = [".".join(parts) for parts in PACKAGES] + ["plugin_core.vocabulary", "plugin_core.options",
                                                         "plugin_core.restore.settings", "plugin_core.training.config"]
    code = (f"import sys\nimport {', '.join(modules)}\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {', '.join(modules)} imported {result.stdout.strip()}"
