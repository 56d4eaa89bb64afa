"""DistributedDataParallel under ``torchrun``: which device each process takes, which backend.

NCCL needs one GPU per process: two processes on one GPU fail inside NCCL. So a process gets
``cuda:LOCAL_RANK`` and NCCL only when the node has at least as many GPUs as processes; with fewer
GPUs the processes share them round-robin and talk over gloo (slower, but it runs); with no GPU
(or ``device="cpu"``) they run on the CPU over gloo.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .._utils import resolve_device


def _local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def ddp_device(device: str | torch.device = "auto") -> torch.device:
    """This process's device: under torchrun with ``"auto"`` / ``"cuda"``, its local GPU (shared
    round-robin when there are fewer GPUs than processes); otherwise ``resolve_device(device)``."""
    dev = resolve_device(device)
    if not under_torchrun() or dev.type != "cuda":
        return dev
    if dev.index is not None and _local_world() > 1:
        raise ValueError(
            f"device {str(device)!r} under torchrun would put every process on the same GPU: use device 'auto' "
            f"or 'cuda' (each process takes the GPU LOCAL_RANK; choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def choose_backend(device: torch.device, local_world: int | None = None, gpus: int | None = None) -> str:
    """``"nccl"`` when every local process has a GPU of its own, else ``"gloo"``; ``$GEOVIZ_DIST_BACKEND``
    overrides the choice (e.g. ``nccl`` where each process sees one GPU of its own as cuda:0)."""
    forced = os.environ.get("GEOVIZ_DIST_BACKEND")
    if forced:
        if forced not in ("nccl", "gloo"):
            raise ValueError(f"GEOVIZ_DIST_BACKEND={forced!r}: use 'nccl' or 'gloo'")
        return forced
    if device.type != "cuda":
        return "gloo"
    local_world = _local_world() if local_world is None else local_world
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if gpus >= local_world:
        return "nccl"
    warnings.warn(
        f"{local_world} processes per node but {gpus} GPU(s): NCCL needs one GPU per process, so the processes "
        f"share the GPUs over gloo (slower). Start at most {gpus} process(es) per node (--nproc_per_node={gpus}), "
        f"or set GEOVIZ_DIST_BACKEND=nccl if each process sees a GPU of its own.",
        stacklevel=3,
    )
    return "gloo"


@dataclass
class DistContext:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    enabled: bool = False
    rank: int = 0
    world: int = 1
    owns_group: bool = False
    backend: str | None = None

    @classmethod
    def setup(cls, device: torch.device) -> DistContext:
        """Join the process group under torchrun (WORLD_SIZE > 1); a no-op otherwise."""
        if dist.is_available() and dist.is_initialized():
            return cls(True, dist.get_rank(), dist.get_world_size(), False, dist.get_backend())
        if under_torchrun():
            backend = choose_backend(device)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend)
            return cls(True, dist.get_rank(), dist.get_world_size(), True, backend)
        return cls()

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (a collective: every rank must call it)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BN statistics drift apart in each rank's last forward)."""
        if self.enabled:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()
