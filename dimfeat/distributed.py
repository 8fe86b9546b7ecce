"""Data-parallel DIM training under ``torchrun`` (PyTorch distributed, gloo on CPU, NCCL on GPU).

Launch ``dimfeat train`` (or any script calling :class:`~dimfeat.training.DIMTrainer`) with
``torchrun --nproc_per_node=N``: :func:`init_from_env` reads torchrun's environment variables
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts the
process group; from then on :class:`DIMTrainer` picks up :class:`DistributedContext` by itself.

What the trainer does with it:

- **Same batches on every rank, then a deterministic shard.** Each rank draws the epoch's shuffled
  site-budget batches from the same seed; global step ``j`` is batches ``j*N ... j*N+N-1`` and
  rank ``r`` trains on batch ``j*N + r``. An incomplete last global step is dropped so that every
  rank runs the same number of steps (a rank waiting for a missing all-reduce would hang).
- **Gradients averaged by an explicit all-reduce** (sum, then divide by ``N``) of every
  parameter of the optimiser (encoder and DIM heads) after ``backward``, before the step; one
  flattened buffer per step. This equals one process accumulating the ``N`` batches' gradients
  and averaging them; ``tests/test_distributed.py`` checks that to a stated tolerance.
- **Per-rank random streams** for false samples and noise: rank ``r`` seeds its generator with
  :func:`rank_seed` (rank 0 keeps the single-process seed).
- **Rank 0 alone writes** checkpoints (and, in the CLI, the weights folder); every rank can
  resume from the checkpoint. Validation runs on every rank on the full validation set, so early
  stopping decides the same on all ranks.

A single process never touches this module's collectives: the trainer's single-process path is
unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "active_context",
    "barrier",
    "global_steps",
    "init_from_env",
    "is_main_process",
    "launched_by_torchrun",
    "rank_seed",
    "shard_groups",
]


def launched_by_torchrun() -> bool:
    """True when torchrun's variables say this is one of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str | torch.device = "auto") -> torch.device:
    """Start the process group from torchrun's environment; return this rank's device.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` or ``"cuda"``: NCCL and ``cuda:LOCAL_RANK`` when CUDA is available;
        ``"cpu"`` (or no CUDA): gloo on the CPU.

    Returns
    -------
    torch.device
        The device this rank trains on.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = str(device) != "cpu" and torch.cuda.is_available()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available")
    resolved = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return resolved


def is_main_process() -> bool:
    """True in a single process and on rank 0 of a process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s random stream (rank 0 keeps ``seed``)."""
    return int(seed) + 1_000_003 * int(rank)


def global_steps(groups: list[np.ndarray], world_size: int) -> list[list[np.ndarray]]:
    """Batches in global steps of ``world_size`` batches; an incomplete tail is dropped."""
    n_steps = len(groups) // world_size
    return [list(groups[j * world_size : (j + 1) * world_size]) for j in range(n_steps)]


def shard_groups(groups: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """The batches rank ``rank`` trains on: its member of every complete global step."""
    return [step[rank] for step in global_steps(groups, world_size)]


@dataclass
class DistributedContext:
    """This process's place in an initialised process group.

    Attributes
    ----------
    rank : int
    world_size : int
    """

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that writes files)."""
        return self.rank == 0

    def setup(self, parameters: list[torch.nn.Parameter], generator: torch.Generator, seed: int):
        """Start every rank from rank 0's parameters and give this rank its random stream."""
        with torch.no_grad():
            for p in parameters:
                dist.broadcast(p.data, src=0)
        generator.manual_seed(rank_seed(seed, self.rank))

    def reseed(self, generator: torch.Generator, seed: int, epoch: int) -> None:
        """Give this rank a fresh stream for a run resumed at ``epoch`` (checkpoints hold rank
        0's stream only)."""
        generator.manual_seed(rank_seed(seed + epoch, self.rank))

    def shard(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        """See :func:`shard_groups`."""
        return shard_groups(groups, self.rank, self.world_size)

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """All-reduce (sum / world size) the gradients of ``parameters`` in one flat buffer.

        A parameter without a gradient contributes zeros and keeps ``grad=None`` locally.
        """
        grads = [
            p.grad
            if p.grad is not None
            else torch.zeros_like(p, memory_format=torch.contiguous_format)
            for p in parameters
        ]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in parameters:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average a dict of floats over ranks (the same keys on every rank)."""
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor = tensor.cpu() / self.world_size
        return {k: float(v) for k, v in zip(keys, tensor.tolist(), strict=True)}


def active_context() -> DistributedContext | None:
    """A :class:`DistributedContext` when a process group of 2+ ranks is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if dist.get_world_size() < 2:
        return None
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active_context() is not None:
        dist.barrier()
