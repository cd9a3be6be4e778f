"""Notebook 07's ZeRO stages with several processes: every process runs this module, one rank each.

    torchrun --nproc_per_node 2 -m course_lib.cli.zero --job JOB.pt --out RESULTS.json

`save_job` writes what the processes train (JOB.pt): the model's settings and initial weights, the training
config and the global batches of a one-process run (masks fixed, so every arm sees the same tokens). Each
process builds the same model, reads its rows of every global batch (rank r of N: rows [r m, (r + 1) m),
m = batch / N, as `distributed.RankShard` does) in `grad_accum` micro-batches, and trains it with
`distributed.DeepSpeedLoop` at each setup of `--setups` in turn ("0", "1", "2", "3", "2+offload"). During
the last update it measures what it holds, tensor by tensor (`distributed.watch_memory`). Process 0 writes
RESULTS.json: per setup, the losses of the updates (the mean over every process's masked tokens), the
seconds each update took, and every process's peak memory by kind (`distributed.measured_memory`).

The precision is `--precision` resolved for the processes' device (`device.resolve_precision`; "auto": fp32
on any CPU, as no model size is passed: notebook 07's tables mean the same on every CPU). On one machine
without GPUs, torchrun's processes share its CPU cores (one thread each).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from .. import device as device_lib
from .. import distributed
from ..model import EncoderConfig, EncoderForMaskedLM
from ..training import TrainConfig

SETUPS = ("0", "1", "2", "3", "2+offload")


def save_job(path, model, config: TrainConfig, batches: list[dict]) -> Path:
    """Write what the processes train: `model`'s settings and weights (its state now), `config`, and the global
    `batches` (dicts of [batch, length] tensors: input_ids, attention_mask, labels), in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
    batches = [{key: value.cpu() for key, value in batch.items()} for batch in batches]
    job = {"model": dataclasses.asdict(model.config), "weights": weights, "train": config.to_dict(), "batches": batches}
    torch.save(job, path)
    return path


def parse_setup(text: str) -> dict:
    """ "2" -> {"stage": 2}; "2+offload" -> {"stage": 2, "offload_optimizer": True}."""
    stage, _, extra = text.partition("+")
    if stage not in ("0", "1", "2", "3") or extra not in ("", "offload") or (extra and stage == "0"):
        raise ValueError(f"setup {text!r}: a ZeRO stage 0-3, or 1-3 followed by +offload (e.g. 2+offload)")
    return {"stage": int(stage), **({"offload_optimizer": True} if extra else {})}


def rank_rows(batch: dict, rank: int, world_size: int, grad_accum: int) -> list[dict]:
    """Process `rank`'s rows of a global batch, cut into `grad_accum` micro-batches."""
    rows = len(batch["input_ids"])
    if rows % (world_size * grad_accum):
        raise ValueError(f"a global batch of {rows} does not split over {world_size} processes x {grad_accum}")
    share = rows // world_size
    mine = {key: value[rank * share : (rank + 1) * share] for key, value in batch.items()}
    micro = share // grad_accum
    return [{key: value[i * micro : (i + 1) * micro] for key, value in mine.items()} for i in range(grad_accum)]


def run_setup(job: dict, setup: str, precision: str, rank: int, world_size: int) -> dict:
    """Train the job's model from its initial weights at one setup; returns its losses, times and memory."""
    model = EncoderForMaskedLM(EncoderConfig(**job["model"]))
    model.load_state_dict(job["weights"])
    config = TrainConfig(**job["train"])
    micro = len(job["batches"][0]["input_ids"]) // (world_size * config.grad_accum)
    ds = distributed.ds_config(
        micro,
        config.grad_accum,
        world_size,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        max_grad_norm=config.max_grad_norm,
        # every tensor split at stage 3: the table then shows the split alone (DeepSpeed keeps small ones whole)
        **({"persistence_threshold": 0} if setup.startswith("3") else {}),
        **parse_setup(setup),
    )
    loop = distributed.DeepSpeedLoop(model, config, ds)
    losses, seconds, snapshots = {}, [], []
    for step, batch in enumerate(job["batches"], 1):
        if step == len(job["batches"]):
            snapshots = distributed.watch_memory(loop.engine)
        started = time.perf_counter()
        losses[step] = loop.step(rank_rows(batch, rank, world_size, config.grad_accum))["loss"]
        seconds.append(time.perf_counter() - started)
    distributed.unwatch_memory(loop.engine)
    memory = [None] * world_size
    torch.distributed.all_gather_object(memory, distributed.peak_memory(snapshots))
    optimizer = type(loop.engine.optimizer).__name__
    del loop
    return {
        "setup": setup,
        **parse_setup(setup),
        "optimizer": optimizer,
        "losses": losses,
        "seconds": seconds,
        "memory": memory,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.cli.zero", description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, type=Path, help="what to train (save_job)")
    parser.add_argument("--out", required=True, type=Path, help="the results, as JSON (written by process 0)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, from {', '.join(SETUPS)}")
    parser.add_argument("--precision", default="auto", choices=device_lib.PRECISIONS)
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher adds it
    args = parser.parse_args(argv)
    setups = args.setups.split(",")
    for setup in setups:
        try:
            parse_setup(setup)
        except ValueError as e:
            parser.error(str(e))
    if not args.job.is_file():
        parser.error(f"--job {args.job}: no such file (notebook 07 writes it with save_job)")
    rank, world_size = distributed.init_distributed()
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    precision = device_lib.resolve_precision(args.precision, device)
    job = torch.load(args.job, weights_only=True)
    results = []
    for setup in setups:
        results.append(run_setup(job, setup, precision, rank, world_size))
        if rank == 0:
            last = len(job["batches"])
            print(f"ZeRO {setup}: {last} updates, loss {results[-1]['losses'][last]:.4f}", flush=True)
    if rank == 0:
        model = EncoderForMaskedLM(EncoderConfig(**job["model"]))
        n_params = model.num_parameters()  # tied weights once
        summary = {
            "world_size": world_size,
            "device": str(device),
            "threads_per_process": torch.get_num_threads(),
            "precision": precision,
            "why": device_lib.auto_precision(device)[1] if args.precision == "auto" else "asked for",
            "n_params": n_params,
            "largest_tensor": max(p.numel() for p in model.parameters()),
            "setups": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))
    torch.distributed.barrier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
