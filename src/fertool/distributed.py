"""Data-parallel training across processes, as started by torchrun.

    torchrun --standalone --nproc-per-node 2 -m fertool train-branch data.safetensors ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `process_group()` joins the group (gloo on CPU,
NCCL on CUDA) and yields a `Cluster`. Every rank holds the whole (small) data set and draws the
same shuffled order each epoch from the same seed; each global batch is then split into one
slice per rank, so the ranks see disjoint shards and together exactly one single-process
batch. DistributedDataParallel averages the gradients, so with `--batch-size` meaning the global
batch, a step is the single-process step up to batch-norm statistics (per slice), dropout and
random augmentation (drawn per rank); without those it is that step to float rounding
(tests/test_distributed.py).
Only rank 0 reports progress and writes files. Without torchrun, this is a one-rank cluster and
nothing here does any communication.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from fertool.errors import BadInputError


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device_for(self, device: torch.device) -> torch.device:
        """This rank's device: on CUDA the GPU of its LOCAL_RANK, else the device as given."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (contiguous slices,
        sizes differing by at most one)."""
        return indices.tensor_split(self.world_size)[self.rank] if self.active else indices

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over all ranks (in place, returned for chaining)."""
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def sync_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics),
        so all evaluate the same model."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as the training step should call it: DDP-wrapped when there are several
        ranks."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def cluster_from_env() -> Cluster:
    """The cluster torchrun describes in the environment; one rank without it."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise BadInputError(
            f"RANK/LOCAL_RANK/WORLD_SIZE must be integers ({err}); start fertool with torchrun"
        ) from err
    return Cluster(rank=rank, world_size=world_size, local_rank=local_rank)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Cluster]:
    """Join torchrun's process group for the block (NCCL for CUDA, gloo otherwise);
    yield the cluster."""
    cluster = cluster_from_env()
    if not cluster.active or dist.is_initialized():
        yield cluster
        return
    if device.type == "cuda":
        torch.cuda.set_device(cluster.device_for(device))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30)
    )
    try:
        yield cluster
    finally:
        dist.destroy_process_group()
