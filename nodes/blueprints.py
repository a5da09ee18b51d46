"""The pack's subgraph blueprints (`subgraphs/*.json`: the one-plugin restore as one node) in the
node library of a host older than ComfyUI's own blueprint support.

A host with `app/subgraph_manager.py` (ComfyUI after v0.3.64) scans every pack's `subgraphs/`
folder itself and serves the files at `GET /global_subgraphs` (an index) and
`GET /global_subgraphs/{id}` (one file, as text in `data`); a frontend of 1.3x or later asks for
them there and lists them under "Subgraph Blueprints". ComfyUI v0.3.64 has neither route, so a
newer frontend on it finds none. On such a host this module serves the same two routes for this
pack's files, in the host's format; on a host that has them, or when another pack serves them
already, it adds nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("diffplugin")

PACK = Path(os.path.abspath(__file__)).parent.parent  # as the host names it: custom_nodes/<folder>, links not followed
ROUTE = "/global_subgraphs"


def entries(pack: Path = PACK) -> dict[str, dict]:
    """The index the host's subgraph manager gives: id -> source, name (the file's stem) and info
    (the pack's folder name), and the file's search aliases in info, where the frontend reads them."""
    found = {}
    for path in sorted((pack / "subgraphs").glob("*.json")):
        key = hashlib.sha256(f"custom_node{path.as_posix()}".encode()).hexdigest()
        info = {"node_pack": pack.name}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            info["search_aliases"] = list(json.loads(path.read_text(encoding="utf-8"))["extra"]["BlueprintSearchAliases"])
        found[key] = {"source": "custom_node", "name": path.stem, "info": info, "path": path}
    return found


def _served(entry: dict, data: bool) -> dict:
    shown = {k: v for k, v in entry.items() if k != "path"}
    if data:
        shown["data"] = entry["path"].read_text(encoding="utf-8")
    return shown


def serve(server=None) -> bool:
    """Add the two routes to the host's server when it has none of its own. True when added."""
    if server is None:
        try:
            from server import PromptServer  # the host's server module
        except ImportError:  # the pack imported by a script or a test, with no server to serve
            return False
        server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    if hasattr(server, "subgraph_manager") or any(getattr(r, "path", None) == ROUTE for r in server.routes):
        return False
    from aiohttp import web

    @server.routes.get(ROUTE)
    async def index(request):
        return web.json_response({key: _served(entry, data=False) for key, entry in entries().items()})

    @server.routes.get(ROUTE + "/{id}")
    async def one(request):
        entry = entries().get(request.match_info["id"])
        if entry is None:
            return web.Response(status=404)
        return web.json_response(_served(entry, data=True))

    log.debug("Diff-Plugin: this host has no %s: serving this pack's subgraph blueprints there", ROUTE)
    return True
