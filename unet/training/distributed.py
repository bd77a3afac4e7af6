"""Data parallelism with torch.distributed (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node=N -m unet train ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; every process then trains on its own share of each global batch
and DDP averages the gradients, so N processes with batch B give the same
update as one process with batch N*B.  CPU runs use the gloo backend, GPUs
NCCL.  Only rank 0 validates, logs and writes checkpoints.

Stopping together: a rank that stops (a NaN loss, an error, SIGTERM) while the
others wait in a collective would leave them blocked for good.  Every step the
ranks therefore agree (:func:`agree`) on whether any of them stops, before the
gradient all-reduce and at each checkpoint; a rank that fails elsewhere
announces it (:func:`announce_stop`) at the next agreement, so every rank stops
with a message saying which rank stopped and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


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
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


#: a rank's reason to stop, as agreed between ranks (0: carry on)
GO, DIVERGED, FAILED = 0, 1, 2
#: how long a stopping rank waits for the others to hear it: a peer that died must not hang it
STOP_TIMEOUT = timedelta(seconds=60)


def agree(info: DistInfo, code: int = GO, device=None) -> list[int]:
    """Every rank's stop code, the same list on all ranks (``[code]`` without DDP).

    A collective: every rank calls it at the same points of the loop.
    """
    if not info.enabled:
        return [code]
    codes = torch.zeros(info.world_size, dtype=torch.int32, device=device)
    codes[info.rank] = code
    dist.all_reduce(codes)
    return [int(c) for c in codes.tolist()]


def announce_stop(info: DistInfo, device=None, *, timeout: timedelta = STOP_TIMEOUT) -> None:
    """Tell the other ranks, at their next :func:`agree`, that this one fails; bounded by ``timeout``."""
    if not (info.enabled and dist.is_initialized()):
        return
    codes = torch.zeros(info.world_size, dtype=torch.int32, device=device)
    codes[info.rank] = FAILED
    try:
        dist.all_reduce(codes, async_op=True).wait(timeout)
    except RuntimeError:  # the others are gone or stuck elsewhere: nothing more to tell them
        pass


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
        _all_left_the_barrier(info)
        dist.destroy_process_group()


def _all_left_the_barrier(info: DistInfo, timeout: timedelta = timedelta(seconds=60)) -> None:
    """Wait, through the rendezvous store, until every process has returned from the last barrier.

    A process returns from a gloo barrier as soon as it has the others' messages, possibly before a
    peer has received its own; tearing its pairs down then can still abort that peer (SIGABRT).
    The store is not a gloo pair, so once every rank has checked in there no collective is in flight.
    """
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
    except (ImportError, RuntimeError):
        return  # no store to meet at: the barrier alone
    store.set(f"unet/left-barrier/{info.rank}", "1")
    store.wait([f"unet/left-barrier/{r}" for r in range(info.world_size)], timeout)


def leave(info: DistInfo, *, timeout: timedelta = STOP_TIMEOUT) -> None:
    """:func:`shutdown` after a stop: the wait for the others is bounded (gloo), so a dead peer cannot hang us."""
    if not (info.enabled and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
        else:
            dist.barrier()
    except RuntimeError:
        pass
    dist.destroy_process_group()
