"""pyproject.toml against the Comfy Registry's rules, offline: the specification
(docs.comfy.org/registry/specifications), what the registry's server accepts (Comfy-Org/registry-backend:
node and publisher ids, SemVer) and how comfy-cli reads the file (`comfy node validate` / `publish`:
classifiers, version ranges, license). CI also runs comfy-cli's own `comfy node validate` (.ci/run).
The publisher's values (pyproject.toml's marked block: Repository, PublisherId, Icon, Banner) are
either all placeholders or all filled in and agreeing (test_ready_to_publish); the publish workflow
(.github/workflows/publish.yml) validates before it publishes and refuses while a placeholder is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml  # PyYAML: a dependency of accelerate, so always installed beside the pack
from PIL import Image

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
WORKFLOW_PATH = REPO / ".github" / "workflows" / "publish.yml"
WORKFLOW = yaml.safe_load(WORKFLOW_PATH.read_text(encoding="utf-8"))
# The publisher's values, as the workflow's guard names them.
PUBLISHER_FIELDS = ("[project.urls] Repository", "[tool.comfy] PublisherId", "[tool.comfy] Icon", "[tool.comfy] Banner")


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
    """An unknown OS or accelerator classifier makes comfy-cli drop all of them (a warning, no error).
    The pack names its accelerators with the specification's exact strings: CUDA, ROCm (torch's cuda
    device) and Apple Metal (the command line's --device mps); nodes run on ComfyUI's device."""
    classifiers = PROJECT.get("classifiers", [])
    for classifier in classifiers:
        if classifier.startswith("Operating System :: "):
            assert classifier.removeprefix("Operating System :: ").startswith(OS_CLASSIFIER_PREFIXES), classifier
        if classifier.startswith("Environment ::"):
            assert classifier.removeprefix("Environment :: ") in ACCELERATOR_CLASSIFIERS, classifier
    assert len(classifiers) == len(set(classifiers)), classifiers
    accelerators = {c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")}
    assert {"GPU :: NVIDIA CUDA", "GPU :: Apple Metal"} <= accelerators, accelerators


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


def repository_owner_and_name(url: str) -> tuple[str, str]:
    parts = urlparse(url).path.strip("/").split("/")
    return parts[0], parts[1]


def raw_url(path: str) -> str:
    """The raw.githubusercontent.com URL of a file of [project.urls] Repository, on the branch the
    publish workflow publishes from."""
    owner, name = repository_owner_and_name(PROJECT["urls"]["Repository"])
    (branch,) = WORKFLOW[True]["push"]["branches"]  # YAML 1.1 reads the key `on` as True
    return f"https://raw.githubusercontent.com/{owner}/{name}/{branch}/{path}"


@pytest.mark.parametrize("key, square, ratio", [("Icon", True, 1.0), ("Banner", False, 21 / 9)])
def test_icon_and_banner_are_files_of_this_repository_at_the_registrys_sizes(key, square, ratio):
    """[tool.comfy] Icon and Banner: raw URLs of images in this repository, built on [project.urls]
    Repository (so they name the same owner), drawn by scripts/registry_art.py. The specification:
    SVG, PNG, JPG or GIF; the icon square and at most 400 x 400 px; the banner 21:9."""
    url = COMFY.get(key, "")
    prefix = raw_url("")
    assert url.startswith(prefix), f"{key} = {url!r}: expected {prefix}<a file of this repository>"
    path = REPO / url.removeprefix(prefix)
    assert path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES, path
    assert path.stat().st_size < 200_000, f"{path.name}: {path.stat().st_size} bytes; keep it small"
    with Image.open(path) as image:
        width, height = image.size
    assert abs(width / height - ratio) < 0.01, (path.name, width, height)
    if square:
        assert width <= 400 and height <= 400, (path.name, width, height)
    else:
        assert width >= 800, (path.name, width, height)  # sharp enough for the registry's page


def run_publish_guard(pyproject_text: str, tmp_path: Path) -> tuple[int, str, str]:
    """The workflow's step that refuses to publish, run as GitHub runs it (`shell: python`) in a
    folder holding `pyproject_text` as pyproject.toml: (exit code, its output, the owner it gives)."""
    (step,) = [s for s in WORKFLOW["jobs"]["ready"]["steps"] if s.get("id") == "publisher"]
    assert step.get("shell") == "python", step
    folder = tmp_path / f"checkout{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(pyproject_text, encoding="utf-8")
    (folder / "guard.py").write_text(step["run"], encoding="utf-8")
    output = folder / "github_output"
    output.touch()
    done = subprocess.run([sys.executable, "guard.py"], check=False, cwd=folder, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GITHUB_OUTPUT": str(output)})
    owners = re.findall(r"^owner=(.*)$", output.read_text(), flags=re.MULTILINE)
    return done.returncode, done.stdout + done.stderr, owners[0] if owners else ""


def test_ready_to_publish(tmp_path):
    """The publisher's values (pyproject.toml's marked block) are all placeholders, as this repository
    ships, or all filled in: never half (a publisher who filled in the URL but not the icon's). While
    any placeholder is left the publish workflow refuses and names every one; once all are filled in
    it goes on, in the repository that [project.urls] Repository names."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    values = dict(zip(PUBLISHER_FIELDS, (PROJECT.get("urls", {}).get("Repository", ""), COMFY.get("PublisherId", ""),
                                         COMFY.get("Icon", ""), COMFY.get("Banner", ""))))
    left = [field for field, value in values.items() if PLACEHOLDER in value.lower()]
    code, output, owner = run_publish_guard(text, tmp_path)
    if left:
        assert left == list(PUBLISHER_FIELDS), f"half filled in: still a placeholder: {left}; filled in: " \
            f"{[f for f in PUBLISHER_FIELDS if f not in left]} (docs/publishing.md, 'What you must fill in')"
        assert code == 1 and not owner, output
        assert all(f"::error title=Not ready to publish::{field}" in output for field in PUBLISHER_FIELDS), output
    else:
        assert code == 0, output
        assert owner == repository_owner_and_name(values["[project.urls] Repository"])[0], (owner, output)


def test_the_publish_guard_refuses_each_half_filled_state_and_passes_a_filled_one(tmp_path):
    """The guard itself, on pyproject.toml with each of the publisher's values left out in turn: only the
    fully filled file passes, and it gives the owner the publish job compares with the repository's."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    raw = "https://raw.githubusercontent.com/{}/diff-plugin/main/docs/images/registry-{}.png"
    unfilled = {"Repository": "https://github.com/REPLACE-ME/diff-plugin", "PublisherId": "replace-me",
                "Icon": raw.format("REPLACE-ME", "icon"), "Banner": raw.format("REPLACE-ME", "banner")}
    filled = {"Repository": "https://github.com/Some-One/diff-plugin", "PublisherId": "some-one",
              "Icon": raw.format("Some-One", "icon"), "Banner": raw.format("Some-One", "banner")}
    current = {"Repository": PROJECT["urls"]["Repository"], "PublisherId": COMFY["PublisherId"],
               "Icon": COMFY["Icon"], "Banner": COMFY["Banner"]}

    def pyproject(**values: str) -> str:
        """pyproject.toml with the publisher's values as given, the others placeholders."""
        result = text
        for key, old in current.items():
            assert result.count(f'{key} = "{old}"') == 1, key
            result = result.replace(f'{key} = "{old}"', f'{key} = "{values.get(key, unfilled[key])}"')
        return result

    code, output, owner = run_publish_guard(pyproject(**filled), tmp_path)
    assert (code, owner) == (0, "Some-One"), output
    code, output, owner = run_publish_guard(pyproject(), tmp_path)
    assert code == 1 and not owner and output.count("still a placeholder") == 4, output
    for missing in filled:
        code, output, owner = run_publish_guard(pyproject(**{k: v for k, v in filled.items() if k != missing}), tmp_path)
        assert code == 1 and not owner and missing in output and "still a placeholder" in output, (missing, output)
    other_repository = "https://raw.githubusercontent.com/someone-else/diff-plugin/main/docs/images/registry-icon.png"
    code, output, _ = run_publish_guard(pyproject(**{**filled, "Icon": other_repository}), tmp_path)
    assert code == 1 and "[tool.comfy] Icon" in output and "is not a file of" in output, output
    elsewhere = "https://gitlab.com/Some-One/diff-plugin"
    code, output, _ = run_publish_guard(pyproject(**{**filled, "Repository": elsewhere}), tmp_path)
    assert code == 1 and "[project.urls] Repository" in output, output


def test_the_publish_workflow_validates_then_publishes_in_the_owners_repository_only():
    """.github/workflows/publish.yml, as docs.comfy.org/registry/publishing gives it: on a push to main
    that changes pyproject.toml and by hand; comfy-cli's `comfy node validate`, failing on a "Warning:"
    line as .ci/run does, before Comfy-Org/publish-node-action with the REGISTRY_ACCESS_TOKEN secret;
    the publish job only where the repository's owner is the one pyproject.toml's Repository names."""
    triggers = WORKFLOW[True]
    assert "workflow_dispatch" in triggers
    assert triggers["push"] == {"branches": ["main"], "paths": ["pyproject.toml"]}, triggers["push"]
    ready, publish = WORKFLOW["jobs"]["ready"], WORKFLOW["jobs"]["publish-node"]
    assert ready["outputs"]["owner"] == "${{ steps.publisher.outputs.owner }}"
    assert publish["needs"] == "ready"
    assert re.fullmatch(r"\$\{\{\s*github\.repository_owner == needs\.ready\.outputs\.owner\s*\}\}", publish["if"]), publish["if"]
    steps = publish["steps"]
    uses = [step.get("uses", "") for step in steps]
    runs = [step.get("run", "") for step in steps]
    assert uses[0].startswith("actions/checkout@"), uses
    install = next(i for i, run in enumerate(runs) if "pip install" in run and "comfy-cli" in run)
    validate = next(i for i, run in enumerate(runs) if "node validate" in run)
    (publish_step,) = [i for i, use in enumerate(uses) if use.startswith("Comfy-Org/publish-node-action@")]
    assert install < validate < publish_step, (install, validate, publish_step)
    assert steps[publish_step]["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for line in ('--skip-prompt --no-enable-telemetry node validate </dev/null 2>&1)"', 'grep -q "^Warning:" <<<"$report"',
                 '"comfy-cli>=1.23"'):
        assert line in ci and line in runs[validate] + runs[install], line
    assert all("secrets." not in run for run in runs), "the token only reaches the registry's action"


def test_every_clone_command_in_the_docs_names_the_repository_of_pyproject():
    """The repository's URL is written once, in [project.urls] Repository: a `git clone` of this
    pack in the README or docs names exactly it, so filling it in there is the only edit."""
    url = PROJECT.get("urls", {}).get("Repository", "")
    clones = [(page.name, found) for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for found in re.findall(r"git clone (https://\S+) diff-plugin", page.read_text(encoding="utf-8"))]
    assert clones, "the README's install names no `git clone <url> diff-plugin`"
    assert [(page, found) for page, found in clones if found != url] == [], f"pyproject.toml says {url}"
