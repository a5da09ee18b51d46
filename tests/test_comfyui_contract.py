"""Node ids and widget order are a contract: a saved workflow names each node by its id and gives
its widget values by position (`widgets_values`). Today's schemas, read inside a real ComfyUI, are
compared with the frozen tests/data/node_contract.json (scripts/node_contract.py): a node id gone or
a widget removed, renamed or moved fails, unless the old id has a replacement in
nodes/replacements.py whose old_widget_ids are the frozen order. A new node or a widget added at the
end is allowed, once the file is rewritten. Also: the replacements' registration on this host, the
example workflows' widget table against the schemas, and the saved workflows' files against the
contract (tests/test_comfyui_saved_workflows.py opens them in the frontends).

    export $(.ci/comfy_host ../shared/comfyui); $COMFYUI_PYTHON -m pytest tests/test_comfyui_contract.py
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import json
import logging

import pytest

from tests import comfy_support as cs
from tests.script_support import script

pytestmark = pytest.mark.comfyui

cs.require_host("the node contract tests")

REPO = cs.REPO


contract_script = script("node_contract")
builder = script("build_example_workflows")
SAVED = sorted((REPO / "tests" / "data").glob("saved-workflow-*.json"),  # oldest version first
               key=lambda p: tuple(int(part) for part in p.stem.split("-")[-1].split(".")))
NAMED_IDS = ("LoadTaskPlugin", "PluginSelector", "ApplyTaskPlugin", "TrainTaskPlugin")  # the README's and docs' nodes


@pytest.fixture(scope="module")
def pack_nodes():
    """The pack's `nodes` package, imported as ComfyUI imports the folder."""
    return importlib.import_module(f"{cs.load_pack().__name__}.nodes")


@pytest.fixture(scope="module")
def current(pack_nodes):
    """Today's node id -> entry (widgets, sockets, outputs), from the real schemas."""
    return contract_script.schema_nodes(contract_script.pack_infos())


@pytest.fixture(scope="module")
def replacements(pack_nodes):
    return importlib.import_module(f"{pack_nodes.__name__}.replacements")


@pytest.fixture(scope="module")
def frozen() -> dict:
    return contract_script.read_contract()


def test_the_named_nodes_and_every_frozen_id_are_there(frozen, current, replacements):
    for node_id in NAMED_IDS:
        assert node_id in frozen["nodes"] and node_id in current, node_id
    assert set(frozen["nodes"]) <= set(current) | {r.old_node_id for r in replacements.REPLACEMENTS}


def test_no_change_breaks_the_saved_workflows(frozen, current, replacements):
    breaking = contract_script.breaking_changes(frozen["nodes"], current, replacements.REPLACEMENTS)
    assert not breaking, "\n".join(["changes that break saved workflows (docs/nodes.md, 'Saved workflows keep working'):",
                                    *breaking])


def test_the_contract_file_is_up_to_date(frozen, current, replacements):
    """A new node, a widget added at the end, a socket or an output changed: allowed, written down."""
    updated = contract_script.updated_contract(frozen["nodes"], current, replacements.REPLACEMENTS)
    stale = contract_script.stale_entries(frozen, updated)
    assert not stale, f"tests/data/node_contract.json is out of date for {stale}: run {contract_script.WRITE_COMMAND}"
    assert contract_script.CONTRACT.read_text() == contract_script.render(updated), f"run {contract_script.WRITE_COMMAND}"


# ---------------------------------------------------------------------- the rule itself, on edited copies


def edited_copy(tmp_path, frozen: dict, edit) -> dict:
    """The contract as a file in tmp_path after `edit(nodes)`, read back as the test reads the real one."""
    contract = copy.deepcopy(frozen)
    edit(contract["nodes"])
    path = tmp_path / "node_contract.json"
    path.write_text(contract_script.render(contract))
    return contract_script.read_contract(path)["nodes"]


def renamed_widget(nodes, old_id="ApplyTaskPlugin"):
    """Yesterday's ApplyTaskPlugin called its first widget `plugin_strength` (today: strength)."""
    nodes[old_id] = nodes.pop("ApplyTaskPlugin")
    nodes[old_id]["widgets"][0] = "plugin_strength"


def test_a_renamed_widget_breaks_without_a_replacement_and_with_one_for_a_registered_id(tmp_path, frozen, current, replacements):
    """The frontend replaces only a node type the server no longer has: a replacement for an id
    that is still registered never runs, so only a new id with a replacement carries the values over."""
    nodes = edited_copy(tmp_path, frozen, renamed_widget)
    breaking = contract_script.breaking_changes(nodes, current, [])
    assert len(breaking) == 1 and breaking[0].startswith("ApplyTaskPlugin:") and "gone: ['plugin_strength']" in breaking[0]
    same_id = replacements.Replacement("ApplyTaskPlugin", "ApplyTaskPlugin", old_widget_ids=nodes["ApplyTaskPlugin"]["widgets"])
    breaking = contract_script.breaking_changes(nodes, current, [same_id])
    assert len(breaking) == 1 and "still registered" in breaking[0], breaking


def test_a_node_given_a_new_id_passes_only_with_a_replacement_of_the_frozen_order(tmp_path, frozen, current, replacements):
    """Yesterday's ApplyTaskPluginV0 (its first widget plugin_strength) is today's ApplyTaskPlugin."""
    nodes = edited_copy(tmp_path, frozen, lambda nodes: renamed_widget(nodes, "ApplyTaskPluginV0"))
    breaking = contract_script.breaking_changes(nodes, current, [])
    assert len(breaking) == 1 and breaking[0].startswith("ApplyTaskPluginV0: no node of the pack has this id"), breaking
    old_widgets = nodes["ApplyTaskPluginV0"]["widgets"]
    mapping = [{"new_id": "strength", "old_id": "plugin_strength"}, *({"new_id": n, "old_id": n} for n in old_widgets[1:])]
    good = replacements.Replacement("ApplyTaskPluginV0", "ApplyTaskPlugin", old_widget_ids=list(old_widgets), input_mapping=mapping,
                                    output_mapping=[{"new_idx": 0, "old_idx": 0}, {"new_idx": 1, "old_idx": 1}])
    assert contract_script.breaking_changes(nodes, current, [good]) == []
    today_order = replacements.Replacement("ApplyTaskPluginV0", "ApplyTaskPlugin", old_widget_ids=current["ApplyTaskPlugin"]["widgets"])
    assert "must be the frozen widget order" in " ".join(contract_script.breaking_changes(nodes, current, [today_order]))
    for bad in ([{"new_id": "strenght", "old_id": "plugin_strength"}], [{"new_id": "strength", "old_id": "strength_of_old"}]):
        wrong = replacements.Replacement("ApplyTaskPluginV0", "ApplyTaskPlugin", old_widget_ids=list(old_widgets), input_mapping=bad)
        assert len(contract_script.breaking_changes(nodes, current, [wrong])) == 1, bad
    # --write then keeps the old id, marked, so that the replacement stays checked against its frozen order
    updated = contract_script.updated_contract(nodes, current, [good])["nodes"]
    assert updated["ApplyTaskPluginV0"] == {**nodes["ApplyTaskPluginV0"], "replaced_by": "ApplyTaskPlugin"}
    assert contract_script.breaking_changes(updated, current, [good]) == []


@pytest.mark.parametrize("edit", [
    lambda nodes: nodes["RestoreWithTaskPlugins"]["widgets"].__setitem__(slice(2, 4), ["later_steps", "steps"]),  # moved
    lambda nodes: nodes["TrainTaskPlugin"]["widgets"].insert(3, "momentum"),  # a widget removed since
    lambda nodes: nodes["SynthesizeDegradedPairs"]["widgets"].remove("control_after_generate"),  # the seed's control added
    lambda nodes: nodes.__setitem__("LoadTaskPlugins", nodes["LoadTaskPlugin"]),  # an id renamed since
], ids=["moved", "removed", "control-widget-added-in-the-middle", "id-gone"])
def test_every_other_breaking_change_fails(tmp_path, frozen, current, edit):
    nodes = edited_copy(tmp_path, frozen, edit)
    assert len(contract_script.breaking_changes(nodes, current, [])) == 1


def test_additions_at_the_end_and_new_nodes_only_ask_for_the_file_to_be_rewritten(tmp_path, frozen, current):
    def older(nodes):  # yesterday: no Image Metrics node, PluginSelector without its threshold widget
        del nodes["DiffPluginImageMetrics"]
        nodes["PluginSelector"]["widgets"].remove("threshold")
    nodes = edited_copy(tmp_path, frozen, older)
    assert contract_script.breaking_changes(nodes, current, []) == []
    updated = contract_script.updated_contract(nodes, current, [])
    assert contract_script.stale_entries({"nodes": nodes}, updated) == ["DiffPluginImageMetrics", "PluginSelector"]


def test_the_script_refuses_to_write_a_breaking_change(tmp_path, monkeypatch, frozen, capsys):
    """scripts/node_contract.py --write on an edited copy: a break is reported and nothing written;
    a stale file (a node missing) is rewritten to today's."""
    path = tmp_path / "node_contract.json"
    broken = copy.deepcopy(frozen)
    broken["nodes"]["PluginSelector"]["widgets"].reverse()
    path.write_text(contract_script.render(broken))
    monkeypatch.setattr(contract_script, "CONTRACT", path)
    assert contract_script.main(["--write"]) == 1 and json.loads(path.read_text()) == broken
    assert "PluginSelector: widgets" in capsys.readouterr().out
    stale = copy.deepcopy(frozen)
    del stale["nodes"]["TrainPluginSelector"]
    path.write_text(contract_script.render(stale))
    assert contract_script.main([]) == 1
    assert contract_script.main(["--write"]) == 0 and path.read_text() == (REPO / "tests" / "data" / "node_contract.json").read_text()


# ---------------------------------------------------------------------- the replacements' registration


def test_on_load_registers_nothing_on_a_host_without_the_api(pack_nodes, replacements, caplog):
    """v0.3.64 has neither io.NodeReplace nor ComfyAPI().node_replacement (nor calls on_load): one
    debug line, no error. A newer host registers every entry (none today)."""
    caplog.set_level(logging.DEBUG, logger="diffplugin")
    asyncio.run(pack_nodes.DiffPluginExtension().on_load())
    if replacements.host_api() is None:
        lines = [r for r in caplog.records if "no node replacement API" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class FakeNodeReplacement:
    def __init__(self, refuse: bool = False):
        self.registered, self.refuse = [], refuse

    async def register(self, node_replace):
        if self.refuse:
            raise ValueError("refused")
        self.registered.append(node_replace)


class FakeAPI:
    def __init__(self, refuse: bool = False):
        self.node_replacement = FakeNodeReplacement(refuse)


def test_a_host_with_the_api_gets_every_replacement_as_its_node_replace(replacements, caplog):
    entries = [replacements.Replacement("OldNode", "NewNode", old_widget_ids=["a", "b"], input_mapping=[{"new_id": "c", "old_id": "a"}]),
               replacements.Replacement("Typo", "NewNode")]
    api = FakeAPI()
    assert asyncio.run(replacements.register(entries, host=(api, dict))) == 2
    assert api.node_replacement.registered == [
        {"new_node_id": "NewNode", "old_node_id": "OldNode", "old_widget_ids": ["a", "b"],
         "input_mapping": [{"new_id": "c", "old_id": "a"}], "output_mapping": None},
        {"new_node_id": "NewNode", "old_node_id": "Typo", "old_widget_ids": None, "input_mapping": None, "output_mapping": None}]
    caplog.set_level(logging.WARNING, logger="diffplugin")
    assert asyncio.run(replacements.register(entries, host=(FakeAPI(refuse=True), dict))) == 0  # logged, the pack still loads
    assert len([r for r in caplog.records if "refused the node replacement" in r.getMessage()]) == 2


# ---------------------------------------------------------------------- what else follows the contract


def test_the_example_workflows_table_gives_the_widgets_of_the_schemas(current):
    """scripts/build_example_workflows.py writes widgets_values from its own table (NODE_TYPES,
    CONTROL_FLAGS): for the pack's nodes it must name the widgets the contract does, in order."""
    ours = [node_type for node_type in builder.NODE_TYPES if node_type in current]
    assert ours
    for node_type in ours:
        assert builder.frontend_widgets(node_type) == current[node_type]["widgets"], node_type


@pytest.mark.parametrize("saved", SAVED, ids=lambda p: p.stem)
def test_every_saved_workflow_holds_nodes_of_the_contract(saved, frozen):
    """Each node of a saved workflow is one the contract froze, with at most its widgets' values
    (later widgets come at the end); the newest file holds every node that is not replaced."""
    graph = json.loads(saved.read_text())
    for node in graph["nodes"]:
        widgets = frozen["nodes"][node["type"]]["widgets"]
        assert len(node["widgets_values"]) <= len(widgets), node["type"]
    if saved == SAVED[-1]:
        kept = {node_id for node_id, entry in frozen["nodes"].items() if "replaced_by" not in entry}
        missing = kept - {node["type"] for node in graph["nodes"]}
        assert not missing, f"{saved.name} lacks {sorted(missing)}: add a saved workflow of this version (scripts/saved_workflow.py)"
