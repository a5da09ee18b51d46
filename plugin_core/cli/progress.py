"""A tqdm bar fed by plugin_core's (done, total) progress callbacks."""

from __future__ import annotations

import sys


class ProgressBar:
    """Made on the first call, which the library makes before the first step (done = 0)."""

    def __init__(self, description: str, unit: str = "step"):
        self.description, self.unit = description, unit
        self.bar, self.label = None, ""

    def __call__(self, done: int, total: int, **postfix) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, unit=self.unit, desc=self.description + self.label)
        self.bar.total = total
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(done - self.bar.n)

    def stage(self, label: str) -> None:
        """Name what runs now after the description ('restoring: derain 1/2', 'restoring: decoding')."""
        self.label = f": {label}" if label else ""
        if self.bar is not None:
            self.bar.set_description(self.description + self.label)

    def write(self, text: str) -> None:
        """A line of text above the bar (or on stderr before it exists)."""
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
