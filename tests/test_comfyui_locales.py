"""The pack's translations (locales/<lang>/nodeDefs.json, ComfyUI's layout for a custom node pack):
the English file is exactly what scripts/build_locales.py makes from today's node schemas (so a new
input or a changed tooltip cannot go untranslated), the Chinese file has every key the English one
has and no other, no string is empty, and a real ComfyUI with this pack serves both at GET /i18n,
where the frontend reads them.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_locales.py
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests import comfy_support as cs
from tests.script_support import script

pytestmark = pytest.mark.comfyui

cs.require_host("the translation tests")

REPO = cs.REPO
LOCALES = REPO / "locales"
LANGUAGES = ("en", "zh")
builder = script("build_locales")


def committed(language: str) -> dict:
    return json.loads((LOCALES / language / "nodeDefs.json").read_text(encoding="utf-8"))


def leaves(tree: dict, path: tuple = ()) -> dict[tuple, object]:
    """Every leaf of a nested dict by its path of keys."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found.update(leaves(value, (*path, key)))
        else:
            found[(*path, key)] = value
    return found


@pytest.fixture(scope="module")
def generated() -> dict:
    return builder.node_defs()


def test_the_english_file_is_what_the_schemas_give(generated):
    """locales/en/nodeDefs.json as scripts/build_locales.py writes it today: every registered node,
    every input (and a seed's control widget), every output, with the schemas' own strings."""
    text = (LOCALES / "en" / "nodeDefs.json").read_text(encoding="utf-8")
    assert text == builder.text(generated), "locales/en/nodeDefs.json is out of date: run scripts/build_locales.py"
    pack = cs.load_pack()
    registered = [node.define_schema().node_id for node in sys.modules[f"{pack.__name__}.nodes"].NODES]
    assert list(generated) == registered
    for node_id, entry in generated.items():
        assert entry["display_name"] and entry["inputs"] and entry["outputs"], node_id


def test_chinese_has_every_english_key_and_no_other():
    en, zh = leaves(committed("en")), leaves(committed("zh"))
    assert sorted(set(en) - set(zh)) == [], "untranslated (in en, not in zh)"
    assert sorted(set(zh) - set(en)) == [], "in zh but not in en (a renamed or removed input?)"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_string_is_empty(language):
    for path, value in leaves(committed(language)).items():
        assert isinstance(value, str) and value.strip(), (language, path, value)


def test_the_chinese_names_and_tooltips_are_chinese():
    """Each node's name and description, and every tooltip, hold Chinese text (technical names such as
    Task-Plugin, CLIP or cfg stay as they are, so a short input name may be all Latin)."""
    chinese = re.compile(r"[\u4e00-\u9fff]")
    zh = committed("zh")
    for node_id, entry in zh.items():
        texts = [entry.get("description", entry["display_name"])]
        texts += [slot["tooltip"] for group in ("inputs", "outputs") for slot in entry[group].values() if "tooltip" in slot]
        for text in texts:
            assert chinese.search(text), (node_id, text)


def test_the_host_serves_both_languages_at_i18n(tmp_path_factory):
    """A real ComfyUI with this pack installed answers GET /i18n with our files under each
    language's nodeDefs (app/custom_node_manager.py), as the frontend fetches them."""
    base, models = tmp_path_factory.mktemp("comfy"), tmp_path_factory.mktemp("models")
    server = cs.ComfyServer(base, models, {}).start()
    try:
        served = server.get("/i18n")
    finally:
        server.stop()
    for language in LANGUAGES:
        ours = committed(language)
        assert {key: served[language]["nodeDefs"].get(key) for key in ours} == ours, language
