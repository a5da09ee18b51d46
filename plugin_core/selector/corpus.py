"""The instruction corpus and the labelled instructions built from it.

plugin_core/selector/data/instructions.json has train and held-out parts for the eight
released tasks, multi-task requests and unrelated requests ("add a cat": select nothing).
Requests are combined in writing, as the paper augments its texts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from ..errors import PluginError

CONNECTORS = (" and ", ", and ", ". Also ", ", then ", " & ", "; ", " and also ", ", plus ")
SETS = ("single", "multi", "single+unrelated")
# Zero-tolerance accuracy the paper reports (method.md); its other Table 5 entries were not available here.
PAPER_ZTA = {"single": 0.998, "multi": 0.979, "single+unrelated": 0.779}


@dataclass(frozen=True)
class Instruction:
    text: str
    tasks: tuple[str, ...]  # wanted plugins; empty: an unrelated request (select nothing)


def load_corpus(path: Path | str | None = None) -> dict:
    if path is None:
        return json.loads(resources.files(__package__).joinpath("data/instructions.json").read_text())
    return _read_json(Path(path))


def _read_json(path: Path):
    if not path.is_file():
        raise PluginError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PluginError(f"{path}: not valid JSON ({error})") from None


def combine(first: str, second: str, rng: random.Random) -> str:
    """Two requests in one sentence, as people write them."""
    if rng.random() < 0.5:
        first, second = second, first
    first = first.rstrip(" .!?")
    connector = rng.choice(CONNECTORS)
    if connector.startswith(".") and second:
        second = second[0].upper() + second[1:]
    elif second and rng.random() < 0.7:
        second = second[0].lower() + second[1:]
    return first + connector + second


def instruction_sets(corpus: dict, tasks: Sequence[str], split: str, seed: int = 0, extra: dict | None = None) -> dict[str, list[Instruction]]:
    """The labelled instructions of one split for these plugins.

    extra: {task: {"train": [...], "heldout": [...]}} instructions for tasks beyond the
    corpus (a new plugin's own), or more for a task it has (added to its own)."""
    rng = random.Random(seed)
    single_source = dict(corpus["single"])
    for task, lines in (extra or {}).items():
        known = single_source.get(task, {})
        single_source[task] = {split: list(known.get(split, [])) + list(lines.get(split, [])) for split in ("train", "heldout")}
    missing = [t for t in tasks if t not in single_source]
    if missing:
        raise ValueError(f"no instructions for task(s) {', '.join(missing)}: give some (e.g. the plugin's own instructions)")
    single = [Instruction(text, (task,)) for task in tasks for text in single_source[task][split]]
    order = {task: i for i, task in enumerate(tasks)}
    multi = [
        Instruction(item["text"], tuple(sorted(item["tasks"], key=order.get)))
        for item in corpus["multi"][split] if all(t in order for t in item["tasks"])
    ]
    unrelated = [Instruction(text, ()) for text in corpus["unrelated"][split]]
    mixed = [Instruction(combine(s.text, rng.choice(unrelated).text, rng), s.tasks) for s in single]
    return {"single": single, "multi": multi, "unrelated": unrelated, "single+unrelated": mixed}


def training_instructions(corpus: dict, tasks: Sequence[str], seed: int = 0, extra: dict | None = None,
                          written_combinations: bool = True) -> list[Instruction]:
    """Train-split instructions (single, multi, unrelated); with `written_combinations` also
    single-task ones combined in writing with unrelated requests and with each other (two or
    three tasks at once), for selectors that cannot be taught with token-level joins."""
    rng = random.Random(seed + 1)
    sets = instruction_sets(corpus, tasks, "train", seed, extra)
    base = [item for name in ("single", "multi", "unrelated") for item in sets[name]]
    if not written_combinations:
        return base
    by_task: dict[str, list[str]] = {}
    for item in sets["single"]:
        by_task.setdefault(item.tasks[0], []).append(item.text)
    order = {task: i for i, task in enumerate(tasks)}
    combined = []
    if len(by_task) > 1:
        for _ in range(4 * len(sets["single"]) // 3):
            chosen = rng.sample(sorted(by_task), k=2 if rng.random() < 0.8 or len(by_task) < 3 else 3)
            text = rng.choice(by_task[chosen[0]])
            for task in chosen[1:]:
                text = combine(text, rng.choice(by_task[task]), rng)
            combined.append(Instruction(text, tuple(sorted(chosen, key=order.get))))
    return base + sets["single+unrelated"] + combined


def read_task_instructions(path: Path | str) -> dict[str, list[str]]:
    """A new task's instructions from a file: JSON {"train": [...], "heldout": [...]}, or text
    with one training instruction per line."""
    path = Path(path)
    if path.suffix == ".json":
        return _read_json(path)
    return {"train": [line.strip() for line in path.read_text().splitlines() if line.strip()], "heldout": []}
