"""What the command-line tests share: the real entry point run in a subprocess, and the tiny
random base models with plugins that its commands read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.random_models import random_task_plugins, write_tiny_clip_vision, write_tiny_sd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m plugin_core ARGS` from the repository root: its exit status and output."""
    return subprocess.run([sys.executable, "-m", "plugin_core", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, check=False)


def write_tiny_base(root: Path, tasks=("derain",), plugins: Path | None = None) -> Path:
    """root/sd, root/clip_vision (tiny, random) and one random plugin per task as
    <task>.safetensors in `plugins` (default: root itself); returns root."""
    from plugin_core import save_plugin

    write_tiny_sd(root / "sd")
    write_tiny_clip_vision(root / "clip_vision")
    for plugin in random_task_plugins(list(tasks)):
        save_plugin(plugin, (plugins or root) / f"{plugin.task}.safetensors")
    return root
