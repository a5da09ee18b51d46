"""The example workflows are generated from one description (UI and API twins in step)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_workflow_files_are_up_to_date():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_example_workflows.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_twins_mirror_the_ui_files():
    for ui_path in sorted((REPO / "example_workflows").glob("*.json")):
        ui = json.loads(ui_path.read_text())
        api = json.loads((REPO / "example_workflows" / "api" / ui_path.name).read_text())
        assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
        for link_id, source, slot, target, _, _ in ui["links"]:
            target_node = next(n for n in ui["nodes"] if n["id"] == target)
            name = next(i["name"] for i in target_node["inputs"] if i["link"] == link_id)
            assert api[str(target)]["inputs"][name] == [str(source), slot]
