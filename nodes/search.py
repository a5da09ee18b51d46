"""How the nodes are found and shown in ComfyUI's node library: the words a search finds them by,
and the inputs the frontend keeps folded away as advanced.

Both are keys of the node definition the host sends the frontend (`/object_info`): a node's
`search_aliases` (the frontend searches them beside its name and display name) and an input's
`advanced` option (the Vue node renderer folds such widgets under "show advanced"; the classic
canvas shows them as before). Frontends that know neither ignore them. ComfyUI v0.3.64's V3
schema has no field for aliases, so `findable` adds them to the definition a node sends; a
newer host that fills them itself keeps its own. Widget order, values and results do not change:
saved workflows read the same."""

from __future__ import annotations

import functools

from .api import io

# The eight tasks of the authors' release, and what a user types for each.
TASK_WORDS = ("derain", "dehaze", "desnow", "deblur", "demoire", "low light", "remove glare", "face restoration",
              "remove rain", "remove haze", "remove snow", "remove blur", "remove moire")
RESTORE_WORDS = ("restore", "restore photo", "photo restoration", "image restoration", "denoise photo", "diffusion restoration")


def advanced(input: io.Input) -> io.Input:
    """`input`, marked as one most users never change (the frontend folds it away)."""
    input.extra_dict["advanced"] = True
    return input


def findable(node_class: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """`node_class`, whose definition for the frontend carries its SEARCH_ALIASES."""
    aliases = list(node_class.SEARCH_ALIASES)
    info = node_class.GET_NODE_INFO_V1.__func__

    @functools.wraps(info)
    def with_aliases(cls):
        found = info(cls)
        if not found.get("search_aliases"):
            found["search_aliases"] = aliases
        return found

    node_class.GET_NODE_INFO_V1 = classmethod(with_aliases)
    return node_class
