"""pyproject.toml against the Comfy Registry's rules, offline: the specification
(docs.comfy.org/registry/specifications), what the registry's server accepts (Comfy-Org/registry-backend:
node and publisher ids, SemVer) and how comfy-cli reads the file (`comfy node validate` / `publish`:
classifiers, version ranges, license). CI also runs comfy-cli's own `comfy node validate` (.ci/run).
What a publisher must fill in is listed by the one test that is skipped until they have.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli", reason="Python 3.10 reads TOML with tomli (pip install tomli)")

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT.get("project", {})
COMFY = PYPROJECT.get("tool", {}).get("comfy", {})

# What the registry's server accepts (registry-backend mapper/node.go, mapper/publisher.go).
BACKEND_NODE_ID = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]*[a-zA-Z0-9])?$")
BACKEND_PUBLISHER_ID = re.compile(r"^[a-z][a-z0-9-]*$")
# SemVer 2.0.0 (the registry parses versions with Masterminds/semver; the specification asks X.Y.Z).
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")
# comfy-cli's check of requires-comfyui and comfyui-frontend-package (each comma-separated part).
VERSION_RANGE_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
OS_CLASSIFIER_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATOR_CLASSIFIERS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
COMFY_KEYS = {"PublisherId", "DisplayName", "Icon", "Banner", "includes", "requires-comfyui", "Models", "web", "version"}
IMAGE_SUFFIXES = (".svg", ".png", ".jpg", ".jpeg", ".gif")
PLACEHOLDER = "replace-me"  # what stands where a publisher fills in their own (docs/publishing.md)


def test_name_is_a_valid_node_id():
    """The node id: under 100 characters; letters, digits, '-', '_', '.'; no two special characters
    in a row; starts with a letter (the specification), ends with a letter or digit (the server);
    without 'ComfyUI' in it (the specification's advice)."""
    name = PROJECT.get("name", "")
    assert 0 < len(name) < 100, name
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name), name
    assert not re.search(r"[._-]{2}", name), name
    assert BACKEND_NODE_ID.match(name), name
    assert "comfyui" not in name.lower(), name


def test_version_is_semver():
    assert "version" not in PROJECT.get("dynamic", []), "a static version: the registry reads project.version"
    assert SEMVER.match(PROJECT.get("version", "")), PROJECT.get("version")


def test_repository_url_is_given():
    url = PROJECT.get("urls", {}).get("Repository", "")
    parsed = urlparse(url)
    assert parsed.scheme == "https" and parsed.netloc and len(parsed.path.strip("/").split("/")) >= 2, url
    assert not url.endswith(".git"), url


def test_description_and_license_are_as_the_registry_reads_them():
    description = PROJECT.get("description", "")
    assert description and len(description) <= 1000  # the server refuses longer ones
    license = PROJECT.get("license")
    if isinstance(license, dict):  # the specification's forms: {file = ...} or {text = ...}
        assert set(license) & {"file", "text"}, license
        if "file" in license:
            assert (REPO / license["file"]).is_file(), license
    else:  # an SPDX expression (PEP 639), which comfy-cli reads as the text form
        assert isinstance(license, str) and re.fullmatch(r"[A-Za-z0-9.+-]+(?: (?:AND|OR|WITH) [A-Za-z0-9.+-]+)*", license), license


def test_classifiers_are_ones_the_registry_understands():
    """An unknown OS or accelerator classifier makes comfy-cli drop all of them (a warning, no error)."""
    classifiers = PROJECT.get("classifiers", [])
    for classifier in classifiers:
        if classifier.startswith("Operating System :: "):
            assert classifier.removeprefix("Operating System :: ").startswith(OS_CLASSIFIER_PREFIXES), classifier
        if classifier.startswith("Environment ::"):
            assert classifier.removeprefix("Environment :: ") in ACCELERATOR_CLASSIFIERS, classifier


def test_version_ranges_are_ones_comfy_cli_accepts():
    """requires-comfyui and a comfyui-frontend-package dependency: comfy-cli drops a range it cannot
    read (a warning only), and the registry then shows no compatibility."""
    ranges = {"requires-comfyui": COMFY.get("requires-comfyui", "")}
    for dependency in PROJECT.get("dependencies", []):
        if dependency.startswith("comfyui-frontend-package"):
            ranges["comfyui-frontend-package"] = dependency.removeprefix("comfyui-frontend-package")
    assert ranges["requires-comfyui"], "requires-comfyui: the ComfyUI the V3 nodes need"
    for field, value in ranges.items():
        for part in value.split(","):
            assert VERSION_RANGE_PART.match(part.strip()), (field, value)


def test_tool_comfy_table():
    """[tool.comfy]: a publisher id the server accepts, a display name, known keys only (a typo such
    as 'PublisherID' is silently ignored by the tools), images the registry can show."""
    assert set(COMFY) <= COMFY_KEYS, set(COMFY) - COMFY_KEYS
    assert BACKEND_PUBLISHER_ID.match(COMFY.get("PublisherId", "")), COMFY.get("PublisherId")
    assert isinstance(COMFY.get("DisplayName", ""), str) and COMFY.get("DisplayName", "").strip()
    for key in ("Icon", "Banner"):
        url = COMFY.get(key, "")
        if url:
            assert urlparse(url).scheme == "https" and urlparse(url).path.lower().endswith(IMAGE_SUFFIXES), (key, url)
    includes = COMFY.get("includes", [])
    assert isinstance(includes, list) and all(isinstance(i, str) and (REPO / i).exists() for i in includes), includes


def test_the_pack_has_what_the_registry_publishes():
    """`comfy node publish` packs the repository's tracked files less .comfyignore's patterns: the
    entry point, the README it shows, the example workflows, the web extension, the library and the
    nodes are there and not ignored; the tests' pickled fixtures are left out."""
    ignored = [line.strip() for line in (REPO / ".comfyignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for path in ("__init__.py", "README.md", "requirements.txt", "example_workflows", "web", "plugin_core", "nodes", "docs"):
        assert (REPO / path).exists(), path
        assert not any(path == p.rstrip("/") or path.startswith(p) for p in ignored), (path, ignored)
    assert "tests/" in ignored


def test_ready_to_publish():
    """Skipped until a publisher has filled in their own values (docs/publishing.md)."""
    missing = []
    if PLACEHOLDER in COMFY.get("PublisherId", "").lower():
        missing.append("[tool.comfy] PublisherId (your publisher id on registry.comfy.org)")
    if PLACEHOLDER in PROJECT.get("urls", {}).get("Repository", "").lower():
        missing.append("[project.urls] Repository (this repository's public URL)")
    if missing:
        pytest.skip("pyproject.toml: fill in before `comfy node publish`: " + "; ".join(missing))


def test_every_clone_command_in_the_docs_names_the_repository_of_pyproject():
    """The repository's URL is written once, in [project.urls] Repository: a `git clone` of this
    pack in the README or docs names exactly it, so filling it in there is the only edit."""
    url = PROJECT.get("urls", {}).get("Repository", "")
    clones = [(page.name, found) for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for found in re.findall(r"git clone (https://\S+) diff-plugin", page.read_text(encoding="utf-8"))]
    assert clones, "the README's install names no `git clone <url> diff-plugin`"
    assert [(page, found) for page, found in clones if found != url] == [], f"pyproject.toml says {url}"
