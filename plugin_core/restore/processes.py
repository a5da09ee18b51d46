"""A restore's share of the work when a launcher (torchrun, accelerate launch) started several
copies of it: each process its own images and its own GPU, and one count of finished images that
every process adds to, so that rank 0 can show one bar for all of them without lockstep."""

from __future__ import annotations

from ..launch import launched_processes


class Processes:
    """This process's place among the processes of one run (one process: the whole work)."""

    def __init__(self, device: str):
        import torch

        self.state, self.device, self._done = None, device, 0
        if launched_processes() > 1:
            from accelerate import PartialState

            cpu = torch.device(device).type == "cpu"
            self.state = PartialState(cpu=cpu)
            self.state.wait_for_everyone()  # every process checked its outputs before any writes one
            self.device = device if cpu else str(self.state.device)  # each process its own GPU
        self.is_main = self.state is None or self.state.is_main_process

    def share(self, items: list) -> list:
        if self.state is None:
            return items
        with self.state.split_between_processes(items) as mine:
            return list(mine)

    def finished(self, count: int = 1) -> int:
        """Add finished images; returns how many all processes finished."""
        if self.state is None:
            self._done += count
            return self._done
        # The process group's own key-value store: torch.distributed has no public accessor for it,
        # and a second store would need a second free port on the first node.
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store().add("diffplugin/restored", count)

    def end(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()
