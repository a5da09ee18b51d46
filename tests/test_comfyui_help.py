"""The node help pages (web/docs/<NodeId>.md and web/docs/<NodeId>/zh.md, ComfyUI's convention for a
custom node pack's help): one in English and one in Chinese for every registered node, every
picture they name in web/docs/images (small JPEGs), the files served by a real ComfyUI under
/extensions/diff-plugin/docs/, and in the newest frontend (FRONTEND_NEWEST, 1.58.1, classic canvas)
the node's Info panel, opened from the selection toolbox as a user does, shows the page; in
Chinese (the Comfy.Locale setting) it shows the Chinese page, and the nodes their Chinese names and
widget labels (locales/zh). The browser steps are scripts/help_pictures.py's, which makes the pictures.

    COMFYUI_DIR=/path/to/ComfyUI FRONTEND_NEWEST=/path/to/static CHROMIUM=/usr/bin/chromium \\
        $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_help.py
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request

import pytest

from tests import comfy_support as cs
from tests.script_support import script

pytestmark = pytest.mark.comfyui

cs.require_host("the help page tests")

REPO = cs.REPO
pictures = script("help_pictures")

DOCS = pictures.WEB_DOCS
NODE_IDS = pictures.node_ids()
LANGUAGES = {"en": "{}.md", "zh": "{}/zh.md"}  # where the frontend looks first for a locale, then falls back to <id>.md
each_node = pytest.mark.parametrize("node_id", NODE_IDS)
each_page = pytest.mark.parametrize("node_id,language", [(n, lang) for n in NODE_IDS for lang in LANGUAGES])


def page_path(node_id: str, language: str):
    return DOCS / LANGUAGES[language].format(node_id)


def first_paragraph(text: str) -> str:
    """The page's first paragraph (after its title), as one line: the help panel's text must hold it."""
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return " ".join(re.sub(r"[`*]", "", next(b for b in blocks if not b.startswith(("#", "!", "|")))).split())  # as rendered


def headings(text: str) -> list[str]:
    return re.findall(r"^##\s+(.*?)\s*$", text, flags=re.MULTILINE)


def test_every_registered_node_has_a_page_in_english_and_chinese():
    pack = cs.load_pack()
    registered = [node.define_schema().node_id for node in sys.modules[f"{pack.__name__}.nodes"].NODES]
    assert sorted(NODE_IDS) == sorted(registered), "scripts/help_pictures.py's WORKFLOW_OF lists every node"
    missing = [str(page_path(n, lang).relative_to(REPO)) for n in registered for lang in LANGUAGES if not page_path(n, lang).is_file()]
    assert not missing, missing
    stray = {p.stem for p in DOCS.glob("*.md")} | {p.name for p in DOCS.iterdir() if p.is_dir() and p.name != "images"}
    assert stray <= set(registered), f"pages of no registered node: {sorted(stray - set(registered))}"


@each_page
def test_every_picture_a_page_names_exists_and_is_small(node_id, language):
    """Pictures are named relative to web/docs/ in both languages: the frontend resolves a page's
    relative links against /extensions/<pack>/docs/, whichever file it read. Each page shows its own node."""
    text = page_path(node_id, language).read_text(encoding="utf-8")
    named = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert f"images/{node_id}.jpg" in named, f"{node_id} ({language}) does not show its node"
    for target in named:
        picture = DOCS / target
        assert picture.is_file(), f"{node_id} ({language}): {target}"
        assert picture.suffix == ".jpg" and picture.stat().st_size < 150_000, (target, picture.stat().st_size)


@each_node
def test_both_languages_have_the_same_sections(node_id):
    english, chinese = (page_path(node_id, lang).read_text(encoding="utf-8") for lang in LANGUAGES)
    assert len(headings(english)) == len(headings(chinese)) >= 3, (headings(english), headings(chinese))
    assert re.search(r"[\u4e00-\u9fff]", first_paragraph(chinese)), "the Chinese page's first paragraph"
    assert english.count("\n|") == chinese.count("\n|"), "the tables' rows (inputs, outputs)"


# ---------------------------------------------------------------------- in a real ComfyUI and its frontend


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = os.environ.get("FRONTEND_NEWEST")
    if not root or not os.path.isdir(root):
        pytest.skip("FRONTEND_NEWEST does not name a frontend's static folder (.ci/comfy_host prints one)")
    started = pictures.start_server(tmp_path_factory.mktemp("help"), root)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install playwright)")
    if not pictures.chromium_path():
        pytest.skip("the browser tests need Chromium (apt install chromium, or CHROMIUM=/path/to/it)")
    with sync_api.sync_playwright() as playwright, pictures.browser_page(playwright, tmp_path_factory.mktemp("profile")) as opened:
        errors = []
        opened.on("pageerror", lambda error: errors.append(str(error)))
        pictures.open_page(opened, server.url, sync_api.TimeoutError)
        opened.timeout_error = sync_api.TimeoutError
        yield opened
        assert not [e for e in errors if pictures.PACK in e], errors


def test_the_host_serves_every_page_and_picture(server):
    for node_id in NODE_IDS:
        for language in LANGUAGES:
            path = page_path(node_id, language)
            with urllib.request.urlopen(f"{server.url}/extensions/{pictures.PACK}/docs/{path.relative_to(DOCS).as_posix()}") as answer:
                assert answer.status == 200 and answer.read() == path.read_bytes(), path
                assert "text/html" not in answer.headers.get("Content-Type", "")  # the frontend refuses an HTML answer
    for picture in (DOCS / "images").glob("*.jpg"):
        with urllib.request.urlopen(f"{server.url}/extensions/{pictures.PACK}/docs/images/{picture.name}") as answer:
            assert answer.status == 200


@each_node
def test_the_info_panel_shows_the_page(page, node_id):
    """Select the node (a click on its title) and press the selection toolbox's info button: the side
    panel's Info tab shows this page (its first paragraph and every section), not the node's description."""
    text = page_path(node_id, "en").read_text(encoding="utf-8")
    shown = " ".join(pictures.open_help(page, node_id).split())
    assert first_paragraph(text) in shown, shown[:500]
    for heading in headings(text):
        assert heading in shown, heading
    assert page.evaluate("() => [...document.querySelectorAll('.node-help-content img')].every(i => i.complete && i.naturalWidth > 0)")


def test_in_chinese_the_nodes_and_the_info_panel_speak_chinese(page, server):
    """With Comfy.Locale zh the frontend names our nodes and labels their widgets from locales/zh,
    and the Info panel reads web/docs/<id>/zh.md."""
    zh = json.loads((REPO / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))
    pictures.set_locale(page, server, "zh", page.timeout_error)
    try:
        shown = page.evaluate("""() => ['ApplyTaskPlugin', 'RestoreWithTaskPlugins'].map(type => {
            const node = LiteGraph.createNode(type);
            return {type, title: node.title, widgets: Object.fromEntries(node.widgets.map(w => [w.name, w.label ?? w.name])),
                    outputs: node.outputs.map(o => o.label ?? o.localized_name ?? o.name)}; })""")
        for node in shown:
            entry = zh[node["type"]]
            assert node["title"] == entry["display_name"], node
            assert node["widgets"]["strength"] == entry["inputs"]["strength"]["name"] == "强度", node
            assert node["outputs"][0] == entry["outputs"]["0"]["name"], node
        text = " ".join(pictures.open_help(page, "ApplyTaskPlugin").split())
        assert first_paragraph(page_path("ApplyTaskPlugin", "zh").read_text(encoding="utf-8")) in text, text[:500]
    finally:
        pictures.set_locale(page, server, "en", page.timeout_error)
