"""Workflows saved by earlier versions still open: every tests/data/saved-workflow-<version>.json
(every node of the pack once, each widget at a value other than its default, as that version saved
it; frozen, never rewritten: docs/nodes.md, "Saved workflows keep working") is loaded in the real
frontends, the host's pin (1.27) and the newest (FRONTEND_NEWEST, classic canvas and Vue nodes),
and each widget of each node reads back its saved value under its frozen name
(tests/data/node_contract.json), and saves it again.

    export $(.ci/comfy_host ../shared/comfyui); CHROMIUM=/usr/bin/chromium $COMFYUI_PYTHON -m pytest tests/test_comfyui_saved_workflows.py
"""

from __future__ import annotations

import json

import pytest

from tests import comfy_support as cs
from tests import frontend_support as support
from tests.frontend_support import BrowserSite, Sites, browser, close_dialogs, frontend, new_server  # noqa: F401

# ruff: noqa: F811 (the browser and frontend fixtures are imported from tests/frontend_support.py, then named as arguments)

pytestmark = pytest.mark.comfyui

cs.require_host("the browser tests")

DATA = cs.REPO / "tests" / "data"
SAVED = sorted(DATA.glob("saved-workflow-*.json"))
CONTRACT = json.loads((DATA / "node_contract.json").read_text())["nodes"]

READ_BACK = """async graph => {
    await app.loadGraphData(graph);
    return app.graph.nodes.map(n => ({
        id: Number(n.id), type: n.type,
        widgets: (n.widgets ?? []).filter(w => w.serialize !== false).map(w => [w.name, w.value]),
        saved: n.serialize().widgets_values ?? [] })); }"""


@pytest.fixture(scope="module")
def sites(request, browser, tmp_path_factory, sd15_fixtures_dir, photo_dir):
    """A ComfyUI with this pack and the test plugins (the files the saved workflows name) for each
    frontend's files, the next one starting while the current one is in use."""
    models = cs.model_files(sd15_fixtures_dir)

    def open_site(server, root):
        return support.open_site(server, lambda: BrowserSite(browser, server, tmp_path_factory.mktemp("chromium-profile"), root))

    pool = Sites(lambda root: new_server(tmp_path_factory, models, photo_dir, root), open_site, support.site_roots(request))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def shown(sites, frontend) -> dict:
    """File name -> every node as `frontend` made it from that saved workflow; no page error of the pack's extension."""
    site = sites.of(frontend)
    page = site.show(frontend)
    result = {}
    for path in SAVED:
        graph = json.loads(path.read_text())
        close_dialogs(page)
        result[path.name] = page.evaluate(READ_BACK, graph)
        close_dialogs(page)
    errors = site.pack_errors()
    assert not errors, errors
    return result


@pytest.mark.parametrize("saved", SAVED, ids=lambda p: p.stem)
def test_every_widget_reads_back_its_saved_value(shown, saved, frontend):
    graph = json.loads(saved.read_text())
    nodes = {node["id"]: node for node in shown[saved.name]}
    assert sorted(nodes) == sorted(node["id"] for node in graph["nodes"]), f"{frontend}: not every node of {saved.name} loaded"
    for node in graph["nodes"]:
        made, values = nodes[node["id"]], node["widgets_values"]
        assert made["type"] == node["type"]
        names = CONTRACT[node["type"]]["widgets"][:len(values)]  # later versions only add widgets after these
        assert [name for name, _ in made["widgets"]][:len(values)] == names, f"{frontend}: {node['type']} widgets"
        for index, (name, value) in enumerate(zip(names, values)):
            assert made["widgets"][index][1] == value, f"{frontend}: {node['type']}.{name} reads {made['widgets'][index][1]!r}, saved {value!r}"
        assert made["saved"][:len(values)] == values, f"{frontend}: {node['type']} saves {made['saved']}, loaded {values}"
