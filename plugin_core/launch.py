"""What a launcher (torchrun, accelerate launch) tells the processes it starts. Pure Python."""

from __future__ import annotations

import os


def launched_processes() -> int:
    """How many processes the launcher started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
