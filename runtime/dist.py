"""Where this process stands in a distributed training node (torchrun's environment).

torchrun (runtime/launch.py) sets RANK, LOCAL_RANK and WORLD_SIZE in each process it starts; a
process started any other way is rank 0 of a world of 1. Rank 0 writes what the run keeps (the
artifacts, the checkpoints' final folders, the events); every rank trains. `barrier()` is a no-op
outside a distributed process group.
"""

from __future__ import annotations

import os
from pathlib import Path


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes artifacts, checkpoints and events."""
    return rank() == 0


def distributed() -> bool:
    return world_size() > 1


def barrier() -> None:
    """Wait for every rank (after torch.distributed is initialised, e.g. by the Trainer)."""
    if not distributed():
        return
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()


def node_folder(run_dir: Path, node_id: str) -> Path:
    """Where a distributed training node's processes report to `ftc run` (runtime/rank.py)."""
    return run_dir / "ranks" / node_id
