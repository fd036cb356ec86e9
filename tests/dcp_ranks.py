"""Write tensors as a torch distributed checkpoint from several ranks (not a test module).

A checkpoint saved by N GPUs has one storage file per rank that wrote (``__0_0.distcp``,
``__1_0.distcp``, ...) and tensors split into chunks across them (tensor parallelism splits
matrices, megatron's fully parallel save spreads the replicated ones). :func:`write_sharded`
makes that layout for real: ``world`` processes on gloo, each saving its slice of every
tensor as a DTensor sharded on dimension 0 (replicated when that dimension does not divide).
Needs torch only; ~5 s for two ranks.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, source: str, out: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        tensors = torch.load(source, weights_only=True)
        state = {k: distribute_tensor(v, mesh, [Shard(0) if v.dim() and v.shape[0] % world == 0 else Replicate()])
                 for k, v in tensors.items()}
        dcp.save(state, storage_writer=dcp.FileSystemWriter(out))
    finally:
        dist.destroy_process_group()


def write_sharded(tensors: dict[str, torch.Tensor], out_dir: str | Path, world: int = 2) -> Path:
    """Save ``tensors`` (full) to ``out_dir`` from ``world`` ranks; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = str(Path(tmp) / "tensors.pt")
        torch.save(tensors, source)
        torch.multiprocessing.start_processes(_worker, args=(world, _free_port(), source, str(out_dir)),
                                              nprocs=world, start_method="spawn")
    return out_dir
