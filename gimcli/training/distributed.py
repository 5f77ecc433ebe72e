"""Data parallel training over processes started by torchrun (one per GPU, or several on CPU).

`torchrun --nproc-per-node N -m gimcli train DATA --out RUN ...` runs the same command in N
processes. Each reads and preprocesses the whole file (gene selection and standardisation need
every cell), then owns a shard of the contexts, balanced by cells. Per step each process computes
the objective of its shard and the gradients are combined with one all-reduce: weighted by cells,
so the update is the gradient of the full objective (the same as one process, up to summation
order). Validation objectives are combined the same way, so every process takes the same
early-stopping decision. Rank 0 writes the outputs. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.distributed as dist

from gimcli.errors import InputError

log = logging.getLogger(__name__)


def env_rank() -> int:
    """This process's rank as torchrun set it (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Processes on this node under torchrun (1 otherwise)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def resolve_threads(threads: int = 0) -> tuple[int, str]:
    """CPU threads for this process's torch and where the number came from: `threads` when > 0;
    else OMP_NUM_THREADS when set (torchrun sets it to 1 per process); else SLURM_CPUS_PER_TASK
    or the CPU affinity of this process, shared among the local processes of torchrun. torch's
    own default (every core of the node) oversubscribes a shared or partly allocated node."""
    if threads > 0:
        return threads, "--threads"
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        cpus, src = int(slurm), "SLURM_CPUS_PER_TASK"
    else:
        try:
            cpus, src = len(os.sched_getaffinity(0)), "CPU affinity"
        except AttributeError:  # platforms without sched_getaffinity
            cpus, src = os.cpu_count() or 1, "CPU count"
    local = local_world_size()
    return max(1, cpus // local), src + (f" / {local} local processes" if local > 1 else "")


def set_threads(threads: int = 0) -> tuple[int, str]:
    """Apply `resolve_threads` to torch (intra-op threads); returns (threads, source)."""
    n, src = resolve_threads(threads)
    torch.set_num_threads(n)
    log.info("torch threads: %d (%s)", n, src)
    return n, src


def peak_rss_per_rank() -> list[int]:
    """Peak resident memory (bytes) of each process so far, gathered by an all-reduce (Linux:
    ru_maxrss in KiB); one process: its own."""
    import resource

    rank, world = rank_and_world()
    mine = np.zeros(world)
    mine[rank] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return [int(v) for v in all_reduce_sum(mine)[0]]


def all_reduce_sum(*arrays: np.ndarray) -> list[np.ndarray]:
    """Element-wise sums of each array over every process, as float64 (one all-reduce for all of
    them). Without a process group (one process) the arrays come back unchanged: the same code
    runs sharded and alone. NCCL reduces on this process's GPU, gloo on the host."""
    out = [np.asarray(a, np.float64) for a in arrays]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return out
    dev = torch.device("cpu")
    if dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    flat = torch.cat([torch.from_numpy(a).reshape(-1) for a in out]).to(dev)
    dist.all_reduce(flat)
    flat = flat.cpu().numpy()
    res, i = [], 0
    for a in out:
        res.append(flat[i : i + a.size].reshape(a.shape))
        i += a.size
    return res


def rank_and_world() -> tuple[int, int]:
    """(rank, processes) of the initialised process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, CUDA processes use the GPU of their local rank."""
    if device.type == "cuda" and env_world_size() > 1 and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


class DataParallel:
    """The process group and the few collective operations the training loop needs."""

    def __init__(self, device: torch.device):
        self.device = device
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # gloo reduces on the host; NCCL on the device
        self.comm_device = device if backend == "nccl" else torch.device("cpu")
        log.info(
            "data parallel: rank %d of %d, backend %s, device %s",
            self.rank,
            self.world,
            backend,
            device,
        )

    @classmethod
    def from_env(cls, device: torch.device) -> DataParallel | None:
        return cls(device) if env_world_size() > 1 else None

    def shard(self, cells_per_context: np.ndarray) -> np.ndarray:
        """Contexts of this rank: largest first, dealt to the rank with fewest cells so far."""
        cells = np.asarray(cells_per_context)
        if len(cells) < self.world:
            raise InputError(f"{len(cells)} contexts cannot be shared by {self.world} processes")
        load = np.zeros(self.world)
        owner = np.empty(len(cells), np.int64)
        for k in np.argsort(-cells, kind="stable"):
            owner[k] = int(np.argmin(load))
            load[owner[k]] += cells[k]
        return np.flatnonzero(owner == self.rank)

    def broadcast(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's parameters."""
        for t in module.state_dict().values():
            buf = t.detach().to(self.comm_device)
            dist.broadcast(buf, 0)
            t.copy_(buf.to(t.device))

    def reduce_gradients(self, module: torch.nn.Module, n_local: float) -> None:
        """Replace each gradient by the cell-weighted mean over ranks, in one all-reduce.

        A parameter without a gradient on this rank (e.g. unused by its shard) counts as zero.
        """
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        )
        buf = torch.cat([flat * n_local, flat.new_tensor([n_local])]).to(self.comm_device)
        dist.all_reduce(buf)
        buf = (buf[:-1] / buf[-1]).to(flat.device)
        i = 0
        for p in params:
            p.grad = buf[i : i + p.numel()].view_as(p).clone()
            i += p.numel()

    def weighted_mean(self, value: float, weight: float) -> float:
        """Mean of a per-cell value over ranks, weighted by each rank's cells (NaN-safe)."""
        ok = np.isfinite(value) and weight > 0
        t = torch.tensor(
            [value * weight if ok else 0.0, weight if ok else 0.0],
            dtype=torch.float64,
            device=self.comm_device,
        )
        dist.all_reduce(t)
        return float(t[0] / t[1]) if float(t[1]) > 0 else float("nan")

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def batch_cells(batch) -> float:
    """Cells a batch stands for (scaled up for subsampled contexts): the weight of its gradient."""
    if hasattr(batch, "n"):
        return float(batch.n.sum())
    counts = torch.bincount(batch.ctx, minlength=batch.scale.shape[0]).to(batch.scale.dtype)
    return float((counts * batch.scale).sum())
