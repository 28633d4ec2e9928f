"""Process-group set-up for torchrun, Azure ML's PyTorch distribution, and MPI.

All three give every process RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT (MPI through OMPI_COMM_WORLD_*, mapped below). Azure ML's PyTorch
distribution starts `process_count_per_instance` processes on each node itself
and sets those plus NODE_RANK, but not LOCAL_WORLD_SIZE, which torchrun sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..parallel import processes_per_node


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _from_mpi(env: dict) -> None:
    """Map OpenMPI's variables to the torch.distributed ones when only MPI set them."""
    if "RANK" in env or "OMPI_COMM_WORLD_RANK" not in env:
        return
    env["RANK"] = env["OMPI_COMM_WORLD_RANK"]
    env["WORLD_SIZE"] = env["OMPI_COMM_WORLD_SIZE"]
    env["LOCAL_RANK"] = env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    if "OMPI_COMM_WORLD_LOCAL_SIZE" in env:
        env.setdefault("LOCAL_WORLD_SIZE", env["OMPI_COMM_WORLD_LOCAL_SIZE"])
    if "MASTER_ADDR" not in env and "AZ_BATCH_MASTER_NODE" in env:  # Azure ML MPI: "host:port"
        host, _, port = env["AZ_BATCH_MASTER_NODE"].partition(":")
        env["MASTER_ADDR"], env["MASTER_PORT"] = host, port or "6105"
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")


def local_world_size(env, world: int) -> int:
    """LOCAL_WORLD_SIZE when the launcher sets it; else one process per local GPU (Azure ML's rule), else 1."""
    if env.get("LOCAL_WORLD_SIZE"):
        return int(env["LOCAL_WORLD_SIZE"])
    return processes_per_node(world, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def init_distributed() -> DistInfo:
    """Join the process group if launched with several processes; NCCL on GPU, gloo on CPU."""
    _from_mpi(os.environ)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                    local_world_size(os.environ, world))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
    else:
        dist.init_process_group("gloo")
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
