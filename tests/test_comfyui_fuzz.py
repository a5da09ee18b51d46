"""No prompt stops the server (issue 32, item 1), against a real ComfyUI over its HTTP API.

Every STRING and COMBO input of every node of the pack, as /object_info lists them, is queued with
a lone surrogate, a NUL, control characters, a 1 MB text and a path that climbs out. Each prompt
is a shipped workflow cut down to the fuzzed node and what feeds it (a Preview Any shows its
output), so whatever is accepted runs. Each one is refused when queued, with the error under that
input alone, or fails when it runs with a message naming the input that the host can log; and
after each, a plain prompt still finishes. The server's log never shows its log writer or its
prompt worker failing.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python -m pytest tests/test_comfyui_fuzz.py
"""

from __future__ import annotations

import json
import re

import pytest

from tests import comfy_support as cs

pytestmark = pytest.mark.comfyui

cs.require_host()

BAD_TEXTS = {
    "surrogate": "derain, \ud800",
    "nul": "derain\x00dehaze",
    "control": "\x1b[31mderain\x07\x7f",
    "1MB": "x" * 1_000_000,
    "path": "../../../../../../etc/passwd",
}
# The host's own refusal of a value not among a combo's options logs the value as it is; its log
# writer catches the UnicodeEncodeError ("--- Logging error ---") and the server goes on. Those
# lines are the host's; any other logging error, and any thread that dies, fails the test.
HOST_LOGGING = re.compile(r'^Message: "  - Value not in list: ', re.M)


# A node's second text, or a path an earlier node of the prompt may write: checked first thing when
# the node runs (nodes/validation.py), since a queue-time check would be filed under two inputs.
CHECKED_WHEN_RUN = {("TrainTaskPlugin", "data_path"), ("TrainPluginSelector", "task_instructions"),
                    ("ComposeTaskPlugins", "weights"), ("ComposeTaskPlugins", "region_tasks")}


def api_workflows() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((cs.REPO / "example_workflows" / "api").glob("*.json"))]


def feeding(prompt: dict, node: str) -> dict:
    """The node and every node it reads from, with a Preview Any on its first output."""
    kept, todo = {}, [node]
    while todo:
        current = todo.pop()
        if current in kept:
            continue
        kept[current] = json.loads(json.dumps(prompt[current]))
        todo += [value[0] for value in kept[current]["inputs"].values() if isinstance(value, list)]
    return kept | {"fuzz_preview": {"class_type": "PreviewAny", "inputs": {"source": [node, 0]}}}


def train_selector_prompt() -> dict:
    """Train Plugin-Selector is in no shipped workflow: the smallest prompt around it."""
    return {
        "img": {"class_type": "LoadImage", "inputs": {"image": "demo_rain.jpg"}},
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": cs.CHECKPOINT}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": cs.CLIP_VISION}},
        "library": {"class_type": "LoadTaskPluginLibrary", "inputs": {"tasks": "", "selector_name": "none"}},
        "node": {"class_type": "TrainPluginSelector", "inputs": {
            "task_plugins": ["library", 0], "clip_vision": ["cv", 0], "images": ["img", 0], "text_encoder": "clip",
            "steps": 1, "learning_rate": 1e-4, "seed": 0, "save_name": "fuzz_selector", "task_instructions": "",
            "clip": ["ckpt", 1]}},
        "fuzz_preview": {"class_type": "PreviewAny", "inputs": {"source": ["node", 0]}},
    }


def node_prompts() -> dict[str, tuple[dict, str]]:
    """Node type -> (a prompt that runs it, its node id), for every node of the pack."""
    found = {"TrainPluginSelector": (train_selector_prompt(), "node")}
    for prompt in api_workflows():
        for node_id, node in prompt.items():
            if node["class_type"] not in found:
                found[node["class_type"]] = (feeding(prompt, node_id), node_id)
    for prompt, node_id in found.values():
        if "steps" in prompt[node_id]["inputs"] and prompt[node_id]["class_type"].startswith("Train"):
            prompt[node_id]["inputs"]["steps"] = 1  # whatever is accepted runs: briefly
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd15_fixtures_dir, photo_dir):
    models = cs.model_files(sd15_fixtures_dir)
    photos = cs.workflow_photos(photo_dir) | {"example.png": cs.COMFYUI_DIR / "input" / "example.png"}
    instance = cs.ComfyServer(tmp_path_factory.mktemp("comfy"), models, photos, max_side=96).start()
    yield instance
    instance.stop()


def fuzzed_inputs(server) -> list[tuple[str, str, str]]:
    """(node type, input name, 'STRING' or 'COMBO') for every text and choice input of the pack's nodes."""
    info = server.get("/object_info")
    pack = [name for name, node in info.items() if node.get("python_module", "").endswith("diff-plugin")]
    assert len(pack) >= 11, pack
    found = []
    for name in sorted(pack):
        for section in ("required", "optional"):
            for input_name, spec in info[name]["input"].get(section, {}).items():
                kind = spec[0]
                if kind == "STRING" or kind == "COMBO" or isinstance(kind, list):
                    found.append((name, input_name, "STRING" if kind == "STRING" else "COMBO"))
    return found


def plain_prompt_finishes(server, number: int) -> None:
    """A prompt with nothing of the pack in it (a new colour each time, so it is never cached)."""
    prompt = {"image": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": number}},
              "preview": {"class_type": "PreviewImage", "inputs": {"images": ["image", 0]}}}
    status, answer = server.post("/prompt", {"prompt": prompt})
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], timeout=60, poll=0.1)
    assert entry["status"]["status_str"] == "success", entry["status"]


def check_outcome(server, node_type: str, node_id: str, input_name: str, status: int, answer: dict) -> str:
    """Refused under exactly that input, or run and failed naming it (or run through): which."""
    if status == 400:
        errors = answer.get("node_errors", {})
        assert set(errors) == {node_id}, answer
        named = {e.get("extra_info", {}).get("input_name") for e in errors[node_id]["errors"]}
        assert named == {input_name}, f"{node_type}.{input_name}: filed under {named}: {errors}"
        return "refused"
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], timeout=300, poll=0.1)
    failures = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    if not failures:
        return "ran"
    failure = failures[0]
    message = failure["exception_message"]
    message.encode("utf-8")  # text any log takes
    assert failure["node_id"] == node_id and input_name in message, failure
    assert len(message) < 4000 and "\n  File " not in message, failure
    return "failed when run"


def test_no_text_or_choice_stops_the_server(server):
    prompts = node_prompts()
    inputs = fuzzed_inputs(server)
    assert {name for name, _, _ in inputs} <= set(prompts), "a node of the pack is in no prompt this test can build"
    assert sum(kind == "STRING" for _, _, kind in inputs) >= 8, inputs
    outcomes = {}
    for number, (node_type, input_name, kind) in enumerate(inputs):
        base, node_id = prompts[node_type]
        for label, value in BAD_TEXTS.items():
            prompt = json.loads(json.dumps(base))
            prompt[node_id]["inputs"][input_name] = value
            status, answer = server.post("/prompt", {"prompt": prompt})
            outcomes[f"{node_type}.{input_name}={label}"] = check_outcome(server, node_type, node_id, input_name, status, answer)
            plain_prompt_finishes(server, number * len(BAD_TEXTS) + len(outcomes))
    log = server.log_text()
    assert "Exception in thread" not in log, log[-4000:]
    blocks = log.split("--- Logging error ---")[1:]
    assert all(HOST_LOGGING.search(block.split("Arguments:")[0]) for block in blocks), [b[-600:] for b in blocks][:3]
    print(json.dumps(outcomes, indent=1))
    for node_type, input_name, kind in inputs:
        for label in ("surrogate", "nul", "control"):  # not text: refused when queued, or as the node's first act
            expected = "failed when run" if (node_type, input_name) in CHECKED_WHEN_RUN else "refused"
            assert outcomes[f"{node_type}.{input_name}={label}"] == expected, (node_type, input_name, label, outcomes)
        if kind == "COMBO":
            assert {outcomes[f"{node_type}.{input_name}={label}"] for label in BAD_TEXTS} == {"refused"}, outcomes
