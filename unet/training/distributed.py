"""Data parallelism with torch.distributed (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node=N -m unet train ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; every process then trains on its own share of each global batch
and DDP averages the gradients, so N processes with batch B give the same
update as one process with batch N*B.  CPU runs use the gloo backend, GPUs
NCCL.  Only rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group once every process has got here.

    Without the barrier a process that finishes first tears down its gloo
    pairs while a peer still uses them, and the peer aborts (SIGABRT,
    "terminate called without an active exception").
    """
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
