"""How fast the command line answers: `diffplugin --help`, every subcommand's --help, an argument
mistake, and `info` on a plugin and on a selector, each a fresh process as a user starts it
(`python -m plugin_core ...`), the median of several runs; and which heavy libraries each one
imported (none of torch / diffusers / transformers / accelerate for help and mistakes).

    python -m benchmarks.bench_cli [--repeats 5]

Goals (issue 23): 0.5 s or less for help and argument mistakes, 1 s for `info` on a plugin.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "accelerate")
PROBE = ("import runpy, sys, json; sys.argv = ['diffplugin'] + json.loads(sys.argv[1]); code = 0\n"
         "try:\n    runpy.run_module('plugin_core', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
         "print('\\nIMPORTED', json.dumps([m for m in %r if m in sys.modules]), file=sys.stderr); sys.exit(code)")


def _files(folder: Path) -> dict[str, Path]:
    """A small plugin file and a selector file written for the `info` cases (random weights)."""
    import torch

    from plugin_core import PluginConfig, PluginInfo, PluginSelector, TaskPlugin, save_plugin, save_selector

    torch.manual_seed(0)
    plugin = save_plugin(TaskPlugin(PluginConfig(clip_width=64, channels=32), PluginInfo.for_task("derain")), folder / "derain.safetensors")
    selector = save_selector(PluginSelector(), folder / "selector.safetensors")
    return {"plugin": plugin, "selector": selector}


def cases(files: dict[str, Path]) -> dict[str, list[str]]:
    from plugin_core.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    found = {"diffplugin --help": ["--help"], "diffplugin (no command)": []}
    found |= {f"{name} --help": [name, "--help"] for name in commands}
    found["restore: three mistakes"] = ["restore", "photo.jpg", "--steps", "0", "--resolution", "60"]
    found["train: missing arguments"] = ["train"]
    found["info plugin.safetensors"] = ["info", str(files["plugin"])]
    found["info selector.safetensors"] = ["info", str(files["selector"])]
    return found


def run(args: list[str]) -> tuple[float, list[str]]:
    """Seconds for one fresh process (as `python -m plugin_core ARGS`), and the heavy libraries it imported."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,), json.dumps(args)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    imported = json.loads(result.stderr.rsplit("IMPORTED", 1)[1]) if "IMPORTED" in result.stderr else ["?"]
    return seconds, imported


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        all_cases = cases(_files(Path(folder)))
        baseline = statistics.median(run(["--version"])[0] for _ in range(args.repeats))
        print(f"python {sys.version.split()[0]}; `diffplugin --version` (the interpreter's own start included): "
              f"{baseline:.3f} s median of {args.repeats}\n")
        print("| command | median s | goal s | within | heavy imports |\n|---|---:|---:|---|---|")
        for name, case in all_cases.items():
            times, imported = [], []
            for _ in range(args.repeats):
                seconds, imported = run(case)
                times.append(seconds)
            goal = {"info plugin.safetensors": 1.0, "info selector.safetensors": None}.get(name, 0.5)
            median = statistics.median(times)
            within = "-" if goal is None else ("yes" if median <= goal else "NO")
            print(f"| `{name}` | {median:.3f} | {goal or '-'} | {within} | {', '.join(imported) or 'none'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
