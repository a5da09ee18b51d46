"""Run an API-format workflow on a running ComfyUI and download its images (standard library only).

    python scripts/submit_workflow.py example_workflows/api/diff_plugin_single_task.json \
        --image photo.jpg --set 7.steps=20 -o restored/

--image uploads a photo and puts it into the workflow's first LoadImage node (or the node
given as --image NODE=PATH); --set NODE.INPUT=VALUE changes any widget (VALUE is read as
JSON when it parses, e.g. numbers, else as a string). Prints the saved files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def upload_image(server: str, path: Path) -> str:
    """POST /upload/image (multipart); returns the name to give LoadImage."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + path.read_bytes() + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    answer = json.loads(_request(f"{server}/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


def _refusal(body: str) -> str:
    """The node errors of a 400 answer, one line each (the whole body when it is not that)."""
    try:
        answer = json.loads(body)
        lines = [f"node {node} ({entry.get('class_type')}): " + "; ".join(e.get("details") or e.get("message", "") for e in entry["errors"])
                 for node, entry in answer.get("node_errors", {}).items()]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
        lines = []
    return "\n  ".join(lines) if lines else body


def run(server: str, prompt: dict, timeout: float = 3600) -> dict:
    """Queue the prompt and wait for it; returns its /history entry (raises if it failed)."""
    payload = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
    try:
        answer = json.loads(_request(f"{server}/prompt", payload, {"Content-Type": "application/json"}))
    except urllib.error.HTTPError as error:  # 400: the graph is invalid; the body says which node and why
        raise SystemExit(f"ComfyUI refused the workflow: {_refusal(error.read().decode(errors='replace'))}") from None
    prompt_id = answer["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = json.loads(_request(f"{server}/history/{prompt_id}")).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            if entry["status"].get("status_str") == "error":
                errors = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                detail = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', '').strip()}"
                                   for e in errors) or json.dumps(entry["status"])[:4000]
                raise SystemExit(f"the workflow failed: {detail}")
            return entry
        time.sleep(1)
    raise SystemExit(f"no result after {timeout} s")


def download_images(server: str, entry: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for output in entry["outputs"].values():
        for image in output.get("images", []):
            if image.get("type") != "output":
                continue
            query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
            saved.append(out_dir / image["filename"])
            saved[-1].write_bytes(_request(f"{server}/view?{query}"))
    return saved


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=Path, help="an API-format workflow (example_workflows/api/*.json)")
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--image", action="append", default=[], metavar="[NODE=]PATH", help="photo to upload and load")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="change a widget value")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), help="folder for the result images")
    args = parser.parse_args(argv)

    prompt = json.loads(args.workflow.read_text())
    loaders = [key for key, node in prompt.items() if node["class_type"] == "LoadImage"]
    for item in args.image:
        node, _, path = item.rpartition("=") if "=" in item else (loaders[0] if loaders else "", "", item)
        if node not in prompt:
            parser.error(f"--image: no node {node!r} in the workflow")
        prompt[node]["inputs"]["image"] = upload_image(args.server, Path(path))
    for item in args.set:
        target, _, value = item.partition("=")
        node, _, name = target.partition(".")
        if node not in prompt or not name:
            parser.error(f"--set {item!r}: expected NODE.INPUT=VALUE with a node id of the workflow")
        prompt[node]["inputs"][name] = _value(value)
    for path in download_images(args.server, run(args.server, prompt), args.output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
