"""Notebook 07: scaling the training loop with DeepSpeed (and with torchrun + DistributedDataParallel).

    config = ds_config(micro_batch_size=32, grad_accum=2, bf16=True, stage=2)   # checked: clear errors
    init_single_process()                     # a notebook or `python`: this process is rank 0 of 1
    loop = DeepSpeedLoop(model, train_config, config)   # deepspeed.initialize(model, optimizer, scheduler)
    training.train(model, blocks, eval_data, train_config, collator=..., folder=..., loop=loop)

`ds_train_step` is notebook 04's `train_step` with three lines changed (`engine(...)`,
`engine.backward(loss)`, `engine.step()`); `save_ds_checkpoint` / `load_ds_checkpoint` keep the step,
the data position and the random state as DeepSpeed's "client state", so a resumed run continues with
the same losses. The loop, logging and evaluation are `training.train`'s, unchanged.

Launched by `deepspeed` or `torchrun`, every process runs the same code: the launcher sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; each process reads its share of every global batch
(`RankShard`), and process 0 logs. Without a launcher (a notebook), `init_single_process` sets those
variables for a world of one: gloo on a CPU, nccl on a GPU.

Memory: `zero_memory` is the ZeRO paper's accounting (Rajbhandari et al. 2020): with mixed precision and
Adam, each parameter costs 2 bytes (16-bit weights) + 2 (16-bit gradients) + K = 12 (fp32 master weights,
momentum, variance); ZeRO-1 splits the optimizer states over the N GPUs, ZeRO-2 the gradients too, ZeRO-3
the weights too (`ds_accounting`: the same in fp32, as DeepSpeed keeps it). `measured_memory` counts what an
engine actually holds, tensor by tensor; `watch_memory` measures it during an update, when the gradients exist.
Notebook 07 runs the stages with two processes: `python -m torch.distributed.run --nproc_per_node 2 -m
course_lib.cli.zero` (`course_lib/cli/zero.py`).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

if not torch.cuda.is_available():
    # before `import deepspeed`: it would otherwise look for a GPU and print a timestamped warning
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from . import quiet  # noqa: E402
from .config import flat  # noqa: E402
from .device import resolve_precision  # noqa: E402
from .masking import IGNORE_INDEX  # noqa: E402
from .training import (
    PlainLoop,
    TrainConfig,
    _to,
    follow_schedule,
    make_optimizer,
    make_scheduler,
    prune_checkpoints,  # noqa: E402
    rng_state,
    set_rng_state,
)

STAGES = (0, 1, 2, 3)


class DSConfigError(ValueError):
    """A DeepSpeed config that cannot work; the message names the key and the value."""


# --------------------------------------------------------------------------- the DeepSpeed config


def ds_config(
    micro_batch_size: int,
    grad_accum: int = 1,
    world_size: int = 1,
    *,
    train_batch_size: int | None = None,
    bf16: bool = False,
    fp16: bool = False,
    stage: int = 0,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    persistence_threshold: int | None = None,
    max_grad_norm: float = 1.0,
    initial_scale_power: int = 16,
    scheduler: dict | None = None,
) -> dict:
    """A DeepSpeed config (the dict `deepspeed.initialize(config=...)` takes, or a ds_config.json), checked.

    micro_batch_size: sequences per process per forward pass; grad_accum: micro-batches per update;
    world_size: processes (GPUs). An update sees train_batch_size = micro_batch_size * grad_accum *
    world_size sequences (give it to have it checked). bf16 / fp16: 16-bit weights with fp32 master
    copies in the optimizer; fp16 also scales the loss (dynamically, starting at 2**initial_scale_power)
    so that small gradients do not underflow. stage: ZeRO 0 (plain data parallelism) to 3.
    offload_optimizer (stage >= 1) keeps the optimizer states and step in CPU memory; offload_params
    (stage 3) the weights too. persistence_threshold (stage 3): tensors with fewer elements stay whole on
    every process (DeepSpeed's stage3_param_persistence_threshold, 100,000 by default: gathering a small tensor
    costs more time than keeping it); 0 splits every one. max_grad_norm: clip the global gradient norm (0: off).
    (Exercise 7.1, `make_ds_config`, is the essential version: a precision string instead of the two
    flags, optimizer offload only, no scheduler, and none of the checks of `check_ds_config`.)
    scheduler: {"lr", "warmup_steps", "total_steps"} for DeepSpeed's own WarmupDecayLR (linear warmup,
    then linear decay to 0: notebook 04's shape, but one update late: its first two updates both get
    rate 0); None (the default) when the loop passes the course's scheduler."""
    config = {
        "train_batch_size": micro_batch_size * grad_accum * world_size
        if train_batch_size is None
        else train_batch_size,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": max_grad_norm,
        "bf16": {"enabled": bf16},
        "fp16": {
            "enabled": fp16,
            "loss_scale": 0,
            "initial_scale_power": initial_scale_power,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "zero_optimization": {"stage": stage},
        "steps_per_print": 1 << 30,  # the course logs its own rows
    }
    if offload_optimizer:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        # the course's torch AdamW steps on the CPU too; DeepSpeedCPUAdam is faster but compiles for a minute first
        config["zero_force_ds_cpu_optimizer"] = False
    if offload_params:
        config["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if persistence_threshold is not None:
        if stage != 3:
            raise DSConfigError(f"persistence_threshold is a ZeRO-3 setting (stage is {stage})")
        config["zero_optimization"]["stage3_param_persistence_threshold"] = persistence_threshold
    if scheduler is not None:
        missing = {"lr", "warmup_steps", "total_steps"} - set(scheduler)
        if missing:
            raise DSConfigError(
                f"scheduler needs lr, warmup_steps and total_steps (missing: {', '.join(sorted(missing))})"
            )
        config["scheduler"] = {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": scheduler["lr"],
                "warmup_num_steps": scheduler["warmup_steps"],
                "total_num_steps": scheduler["total_steps"],
                "warmup_type": "linear",
            },
        }
    check_ds_config(config, world_size)
    return config


def _positive_int(config: dict, key: str, where: str) -> int | None:
    value = config.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise DSConfigError(f"{where}{key} must be a positive integer, got {value!r}")
    return value


def _enabled(config: dict, key: str) -> bool:
    section = config.get(key) or {}
    return isinstance(section, dict) and section.get("enabled") is True


def check_ds_config(config: dict, world_size: int = 1, where: str = "") -> dict:
    """Raise DSConfigError for a config DeepSpeed would reject or misread: bf16 and fp16 both on; a
    train_batch_size that is not micro-batch x accumulation x world size; offload without the ZeRO stage
    that supports it; an unknown stage; "auto" values left unresolved (`resolve_ds_config`). Returns it."""
    if not isinstance(config, dict):
        raise DSConfigError(f"{where}a DeepSpeed config is a mapping of keys to values, got {type(config).__name__}")
    autos = [key for key, value in flat(config).items() if value == "auto"]
    if autos:
        raise DSConfigError(
            f"{where}{', '.join(autos)} = 'auto': resolve_ds_config fills these from the training config"
        )
    if _enabled(config, "bf16") and _enabled(config, "fp16"):
        raise DSConfigError(f"{where}bf16.enabled and fp16.enabled are both true: choose one 16-bit format")
    micro = _positive_int(config, "train_micro_batch_size_per_gpu", where)
    accum = _positive_int(config, "gradient_accumulation_steps", where)
    total = _positive_int(config, "train_batch_size", where)
    if [micro, accum, total].count(None) > 1:
        raise DSConfigError(
            f"{where}give at least two of train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps"
        )
    if None not in (micro, accum, total) and micro * accum * world_size != total:
        raise DSConfigError(
            f"{where}train_batch_size={total} but train_micro_batch_size_per_gpu x "
            f"gradient_accumulation_steps x world size = {micro} x {accum} x {world_size} = "
            f"{micro * accum * world_size}"
        )
    clip = config.get("gradient_clipping", 0.0)
    if not isinstance(clip, (int, float)) or isinstance(clip, bool) or clip < 0:
        raise DSConfigError(f"{where}gradient_clipping must be a number >= 0, got {clip!r}")
    zero = config.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in STAGES:
        raise DSConfigError(f"{where}zero_optimization.stage={stage!r}: choose one of 0, 1, 2, 3")

    def offloaded(key):
        section = zero.get(key) or {}
        return isinstance(section, dict) and section.get("device", "none") not in ("none", None)

    if offloaded("offload_optimizer") and stage == 0:
        raise DSConfigError(f"{where}zero_optimization.offload_optimizer needs ZeRO stage 1, 2 or 3 (stage is 0)")
    if offloaded("offload_param") and stage != 3:
        raise DSConfigError(f"{where}zero_optimization.offload_param needs ZeRO stage 3 (stage is {stage})")
    return config


def resolve_ds_config(
    config: dict, train: TrainConfig, world_size: int = 1, where: str = "", device: torch.device | None = None
) -> dict:
    """A copy of `config` with its "auto" values taken from the training config (as transformers does):
    the micro-batch (train.batch_size), accumulation (train.grad_accum), train_batch_size, gradient_clipping
    (train.max_grad_norm) and bf16 / fp16 (train.precision, as `device.resolve_precision` resolves it for
    `device`, by default the GPU if there is one: bf16 on a GPU without bf16 units is fp16, with DeepSpeed's
    dynamic loss scaling). A value given in both that differs stops the run."""
    config = json.loads(json.dumps(config))
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(train.precision, device)
    asked = f"train.precision={train.precision!r}" + (f" (here {precision})" if precision != train.precision else "")
    wanted = {
        "train_micro_batch_size_per_gpu": ("train.batch_size", train.batch_size),
        "gradient_accumulation_steps": ("train.grad_accum", train.grad_accum),
        "train_batch_size": (
            "train.batch_size x train.grad_accum x world size",
            train.batch_size * train.grad_accum * world_size,
        ),
        "gradient_clipping": ("train.max_grad_norm", train.max_grad_norm),
    }
    for key, (name, value) in wanted.items():
        given = config.setdefault(key, "auto")
        if given == "auto":
            config[key] = value
        elif given != value:
            raise DSConfigError(f'{where}{key}={given!r} but {name}={value!r}: make them agree, or write "auto"')
    for kind in ("bf16", "fp16"):
        section = config.setdefault(kind, {})
        enabled = section.setdefault("enabled", "auto")
        if enabled == "auto":
            section["enabled"] = precision == kind
        elif enabled != (precision == kind) and (enabled or precision == kind):
            raise DSConfigError(f'{where}{kind}.enabled={enabled} but {asked}: make them agree, or write "auto"')
    return check_ds_config(config, world_size, where)


def load_ds_config(path) -> dict:
    """A DeepSpeed config from a JSON file (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise DSConfigError(f"DeepSpeed config {path} not found")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise DSConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise DSConfigError(f"{path}: a DeepSpeed config is a JSON object")
    return config


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group the launcher (`deepspeed`, `torchrun`) described in the environment, or,
    without a launcher, make this process rank 0 of a world of one. gloo on a CPU, nccl on a GPU.
    Returns (rank, world_size). Does nothing more if the group exists already."""
    if not dist.is_initialized():
        _deepspeed()  # quiet, and (on a CPU) without the op it would compile when the group is made
        launched = all(key in os.environ for key in LAUNCH_VARIABLES)
        # no launcher, and alone: no one to find, so any free port will do. (Under a launcher, even of one
        # process, keep its port: torchrun's processes join the store its agent already listens on.)
        if not launched and os.environ.get("WORLD_SIZE", "1") == "1":
            _alone()
        for key in LAUNCH_VARIABLES:
            if key not in os.environ:
                raise RuntimeError(
                    f"{key} is not set: start the processes with deepspeed or torchrun, or run one process"
                )
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if dist.get_world_size() == 1 and "LOCAL_RANK" not in os.environ:  # DeepSpeed reads them at every initialize
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    return dist.get_rank(), dist.get_world_size()


def init_single_process(backend: str | None = None) -> tuple[int, int]:
    """For a notebook: set RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR, MASTER_PORT (a free port) and
    create the process group (gloo on a CPU, nccl on a GPU). DeepSpeed needs a process group even for one
    process; without these variables it would go looking for MPI."""
    if not dist.is_initialized():
        _alone()
    return init_distributed(backend)


LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def environment_for_a_launch() -> dict:
    """This process's environment without the rank variables (`LAUNCH_VARIABLES`, LOCAL_RANK): what a launcher
    or a command started from a notebook should get, so that it is not taken for a rank of this world."""
    return {key: value for key, value in os.environ.items() if key not in (*LAUNCH_VARIABLES, "LOCAL_RANK")}


def _alone() -> None:
    """The environment of rank 0 in a world of one, listening on a free port."""
    single = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    os.environ.update(single, MASTER_PORT=str(free_port()))


def _deepspeed():
    """`import deepspeed`, quiet (`quiet.import_deepspeed`). On a CPU, without its shared-memory collective
    op: DeepSpeed would compile it for collectives between processes on one machine; one process has no
    one to talk to, and several CPU processes are a demonstration (gloo does their all-reduce).
    COURSE_DS_SHM=1 keeps it."""
    return quiet.import_deepspeed(keep_shm_op=torch.cuda.is_available() or os.environ.get("COURSE_DS_SHM") == "1")


class RankShard:
    """Process `rank`'s share of every global batch of a stream of index batches: items
    [rank * m, (rank + 1) * m) where m = batch / world_size. Every process draws the same global batches
    (same seed), so the position is the same everywhere and is saved once."""

    def __init__(self, stream, rank: int, world_size: int):
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.stream)
        if len(batch) % self.world_size:
            raise ValueError(f"a global batch of {len(batch)} does not split over {self.world_size} processes")
        share = len(batch) // self.world_size
        return batch[self.rank * share : (self.rank + 1) * share]

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def _sum_over_processes(values: list[float]) -> list[float]:
    """`values` summed element-wise over the processes (all of them get the sums)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def _over_processes(result: dict, world_size: int, loss: str = "mean") -> dict:
    """The update's row for the log: its masked tokens summed over the processes, its loss averaged
    (`loss="mean"`: each process reports the mean over its own tokens) or summed (`"sum"`: each reports its
    share of the mean over every process's tokens, as `ds_train_step` does)."""
    if world_size == 1:
        return result
    total_loss, tokens = _sum_over_processes([result["loss"], float(result["tokens"])])
    return {**result, "loss": total_loss / (world_size if loss == "mean" else 1), "tokens": int(tokens)}


# --------------------------------------------------------------------------- one update with DeepSpeed


def ds_train_step(engine, micro_batches: list[dict]) -> dict:
    """`training.train_step` for a DeepSpeed engine: the engine runs the forward pass, `engine.backward`
    replaces `loss.backward()` (it scales an fp16 loss and, under ZeRO 2/3, reduces and partitions the
    gradients as they are made), and `engine.step()` replaces clipping, `optimizer.step()`,
    `scheduler.step()` and `zero_grad()`. DeepSpeed counts the micro-batches and updates the weights only
    at the last one of each update (gradient_accumulation_steps in its config must be len(micro_batches)).
    With several processes, each weights its tokens by the masked tokens of all of them (one all-reduce of
    the counts) and scales its loss by their number, which DeepSpeed's average of the gradients undoes: the
    update is the one a single process would make from the whole global batch.
    Returns {"loss" (this process's share of the update's loss: the shares sum to it), "lr", "grad_norm"
    (None when DeepSpeed does not report it), "tokens" (this process's)}."""
    engine.train()
    device = engine.device
    counts = [int((batch["labels"] != IGNORE_INDEX).sum()) for batch in micro_batches]
    (total,) = _sum_over_processes([float(sum(counts))])  # every process's masked tokens of this update
    if total == 0:
        raise ValueError("ds_train_step: no masked token in any micro-batch, so there is no loss to learn from")
    world = dist.get_world_size() if dist.is_initialized() else 1  # DeepSpeed averages the gradients over them
    lr = engine.get_lr()[0]
    loss_value = 0.0
    for batch, count in zip(micro_batches, counts):
        batch = _to(batch, device)
        out = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        # DeepSpeed counts every micro-batch, so one without a masked token still takes a (zero) step
        loss = out.loss.float() * (count / total) if count else out.logits.sum() * 0.0
        engine.backward(loss * world, scale_wrt_gas=False)  # our weights already sum to 1 over the micro-batches
        engine.step()  # an update only at the last micro-batch
        loss_value += loss.item()
    grad_norm = engine.get_global_grad_norm()
    return {
        "loss": loss_value,
        "lr": lr,
        "grad_norm": None if grad_norm is None else float(grad_norm),
        "tokens": sum(counts),
    }


def ds_tag(step: int) -> str:
    return f"step-{step:07d}"


def save_ds_checkpoint(engine, folder, step: int, data_state: dict | None = None, extra: dict | None = None) -> Path:
    """`engine.save_checkpoint` into folder/step-000000N/, with the course's client state: the step, the data
    position (`data_state`), every random generator's state and `extra`. Every process must call it (under
    ZeRO each one writes its own shard of the optimizer states). DeepSpeed writes folder/latest last."""
    client_state = {"step": step, "data": data_state or {}, "rng": rng_state(), "extra": extra or {}}
    engine.save_checkpoint(str(folder), tag=ds_tag(step), client_state=client_state)
    return Path(folder) / ds_tag(step)


def load_ds_checkpoint(engine, path, restore_rng: bool = True) -> dict:
    """Load a DeepSpeed checkpoint folder (folder/step-000000N/) into `engine`: weights, optimizer states
    (this process's shard), scheduler; restores the random generators; returns the client state
    {"step", "data", "rng", "extra"}. Every process must call it."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no DeepSpeed checkpoint folder at {path}")
    loaded, client_state = engine.load_checkpoint(str(path.parent), tag=path.name)
    if loaded is None:
        raise ValueError(f"{path}: DeepSpeed could not load this checkpoint")
    if not isinstance(client_state, dict) or "step" not in client_state:
        raise ValueError(f"{path} is not a course checkpoint (no 'step' in its client state)")
    if restore_rng:
        set_rng_state(client_state["rng"])
    return client_state


# --------------------------------------------------------------------------- loops for training.train


class DeepSpeedLoop:
    """`training.train`'s update and checkpoint with a DeepSpeed engine (see `training.PlainLoop`).

    The engine gets the course's AdamW (decay on matrices only) and its warmup schedule, unless the
    DeepSpeed config has its own "optimizer" / "scheduler" sections. Call `init_distributed` first when
    launched by deepspeed or torchrun; alone, this makes the process rank 0 of 1."""

    def __init__(self, model, config: TrainConfig, ds_config: dict):
        deepspeed = _deepspeed()
        self.rank, self.world_size = init_distributed()
        check_ds_config(ds_config, self.world_size)
        optimizer = None if "optimizer" in ds_config else make_optimizer(model, config)
        scheduler = None if optimizer is None or "scheduler" in ds_config else make_scheduler(optimizer, config)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.own_scheduler = scheduler is not None
        self.model, self.module, self.config, self.ds_config = self.engine, self.engine.module, config, ds_config
        self.stage = self.engine.zero_optimization_stage()
        self._dist = dist

    def step(self, micro_batches: list[dict]) -> dict:
        return _over_processes(ds_train_step(self.engine, micro_batches), self.world_size, loss="sum")

    def save(self, folder: Path, step: int, data_state: dict, extra: dict) -> None:
        save_ds_checkpoint(self.engine, folder, step, data_state, extra)
        if self.rank == 0:
            prune_checkpoints(folder, self.config.keep_last)
        self._dist.barrier()

    def load(self, path) -> dict:
        state = load_ds_checkpoint(self.engine, path)
        if self.own_scheduler:
            follow_schedule(self.scheduler.optimizer, self.scheduler, state["step"])
        return state

    def shard(self, stream):
        return RankShard(stream, self.rank, self.world_size) if self.world_size > 1 else stream

    def full_state_dict(self) -> dict:
        """The model's weights as fp32 CPU tensors, whole (ZeRO-3 gathers the shards from every process)."""
        deepspeed = _deepspeed()

        params = list(self.module.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.stage == 3):
            return {name: value.detach().float().cpu().clone() for name, value in self.module.state_dict().items()}


class DDPLoop:
    """`training.train`'s update and checkpoint with torch's DistributedDataParallel (`torchrun`): every
    process holds the whole model and optimizer; `loss.backward()` all-reduces (averages) the gradients,
    so the processes stay identical. Process 0 writes the checkpoints (plain notebook-04 files)."""

    def __init__(self, model, config: TrainConfig):
        self.rank, self.world_size = init_distributed()
        self.plain = PlainLoop(model, config)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.plain.model = DistributedDataParallel(model, device_ids=[local] if torch.cuda.is_available() else None)
        self.model, self.module, self.config = self.plain.model, model, config

    def step(self, micro_batches: list[dict]) -> dict:
        # each process's mean over its own tokens, averaged: the global mean when they hold as many masked tokens
        return _over_processes(self.plain.step(micro_batches), self.world_size)

    def save(self, folder: Path, step: int, data_state: dict, extra: dict) -> None:
        if self.rank == 0:
            self.plain.save(folder, step, data_state, extra)
        dist.barrier()

    def load(self, path) -> dict:
        return self.plain.load(path)

    def shard(self, stream):
        return RankShard(stream, self.rank, self.world_size) if self.world_size > 1 else stream


# --------------------------------------------------------------------------- memory


def zero_memory(n_params: int, stage: int, n_gpus: int, k: int = 12, weight_bytes: int = 2) -> dict:
    """Bytes per GPU for the model states of mixed-precision Adam training under ZeRO `stage` on `n_gpus`:
    16-bit weights 2Ψ, 16-bit gradients 2Ψ, optimizer states KΨ (fp32 weights, momentum and variance:
    K = 12), ZeRO-1 dividing the optimizer states by N, ZeRO-2 the gradients too, ZeRO-3 the weights too.
    weight_bytes: 2 for 16-bit weights and gradients, 4 for fp32 ones (`ds_accounting`).
    Activations, buffers and fragmentation come on top."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: choose one of 0, 1, 2, 3")
    if n_gpus < 1 or n_params < 0:
        raise ValueError(f"n_gpus must be >= 1 and n_params >= 0 (got {n_gpus}, {n_params})")
    params = weight_bytes * n_params / (n_gpus if stage >= 3 else 1)
    grads = weight_bytes * n_params / (n_gpus if stage >= 2 else 1)
    optimizer = k * n_params / (n_gpus if stage >= 1 else 1)
    return {"params": params, "grads": grads, "optimizer": optimizer, "total": params + grads + optimizer}


def ds_accounting(n_params: int, stage: int, n_gpus: int, precision: str) -> dict:
    """`zero_memory` for a DeepSpeed run in `precision`. bf16 / fp16: the paper's 2Ψ + 2Ψ + 12Ψ. fp32: weights
    and gradients take 4 bytes; DeepSpeed's ZeRO optimizers (stages 1-3) still keep their own fp32 copy of
    their share of the weights (K = 4 + 8 = 12), while at stage 0 Adam updates the fp32 weights themselves
    (K = 8: momentum and variance). Measured by `measured_memory`; tests/test_distributed.py checks it."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision={precision!r}: choose fp32, bf16 or fp16")
    fp32 = precision == "fp32"
    return zero_memory(n_params, stage, n_gpus, k=8 if fp32 and stage == 0 else 12, weight_bytes=4 if fp32 else 2)


def accounting_gaps(
    memory: dict, n_params: int, stage: int, n_gpus: int, precision: str, largest_tensor: int, offload: bool = False
) -> list[str]:
    """Where one process's measured memory (`measured_memory` / `peak_memory`) departs from `ds_accounting` at
    `n_gpus` processes; [] when it agrees. Weights and optimizer states (fp32 copy + Adam) must be within 1%
    (DeepSpeed pads its flat buffers a little); gradients too at stages 0 and 1, and at stages 2 and 3 from the
    accounting up to one tensor (of `largest_tensor` elements) more: ZeRO-2 keeps whole the gradient of a tensor
    that the cut between two processes' shares falls in. With optimizer `offload`, the optimizer states belong
    in CPU memory (K Ψ / N there, none on the device), and the device keeps no gradient but a transfer buffer
    of at most one tensor."""
    expected = ds_accounting(n_params, stage, n_gpus, precision)
    weight_bytes = 4 if precision == "fp32" else 2
    tensor = largest_tensor * weight_bytes
    optimizer = memory["master"] + memory["optimizer_states"]
    gaps = []

    def near(name, measured, target):
        if abs(measured - target) > 0.01 * max(target, 1.0):
            gaps.append(f"{name}: {measured / n_params:.2f} bytes/param, accounting {target / n_params:.2f}")

    near("weights", memory["params"], expected["params"])
    if offload:
        if not memory["offloaded"]:
            gaps.append("optimizer states: on the device, but offload was asked for")
        near("optimizer states in CPU memory", optimizer, expected["optimizer"])
        low, high = 0.0, tensor
    else:
        if memory["offloaded"]:
            gaps.append("optimizer states: offloaded, but offload was not asked for")
        near("optimizer states", optimizer, expected["optimizer"])
        low = expected["grads"]
        high = expected["grads"] + (tensor if stage >= 2 else 0.01 * expected["grads"])
    if not 0.99 * low <= memory["grads"] <= 1.01 * high:
        gaps.append(
            f"gradients: {memory['grads'] / n_params:.2f} bytes/param, accounting {low / n_params:.2f} "
            f"to {high / n_params:.2f}"
        )
    return gaps


def _base_optimizer(engine):
    optimizer = engine.optimizer
    while hasattr(optimizer, "optimizer") and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def _tensors(value, depth: int = 0):
    """The tensors in `value`: itself, or inside its lists, tuples and dicts (three levels down)."""
    if torch.is_tensor(value):
        yield value
    elif depth < 3 and isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors(item, depth + 1)


def measured_memory(engine) -> dict:
    """Bytes this process holds now for the model states of a DeepSpeed engine, counted tensor by tensor, each
    memory block once (a flat buffer is counted whole, the tensors that are views into it not again):

    * "params": the module's weights (under ZeRO-3 this process's shard, and any tensor gathered whole);
    * "grads": the module's `.grad`s, every tensor DeepSpeed's optimizer keeps under a name with "grad" in it
      (its partitioned gradient buffers) and the `.grad` of the fp32 copies. They exist between a backward
      pass and the update: `watch_memory` looks then;
    * "master": the optimizer's own fp32 copy of the weights (0 when Adam updates the module's tensors);
    * "optimizer_states": Adam's momentum and variance;
    * "offloaded": whether DeepSpeed keeps the last two (and the Adam step) in CPU memory, off the device;
    * "offload_grads": the gradients such an optimizer keeps in CPU memory for its Adam step (the fp32 copies'
      `.grad` and DeepSpeed's buffers named for the CPU, or any gradient on the CPU when the engine is on a
      GPU), not counted in "grads"; 0 without offload.
    Meta tensors (shapes without memory) are not counted."""
    counted = set()

    def total(tensors) -> int:
        n = 0
        for t in tensors:
            if t is None or not torch.is_tensor(t) or t.numel() == 0 or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() not in counted:
                counted.add(storage.data_ptr())
                n += storage.nbytes()
        return n

    optimizer, base = engine.optimizer, _base_optimizer(engine)
    module = list(engine.module.parameters())
    params = total(p.data for p in module) + total(getattr(p, "ds_tensor", None) for p in module)
    # ZeRO-1/2 keep their fp32 shares in single_partition_of_fp32_groups, ZeRO-3 aside between steps too
    copies = [p for group in base.param_groups for p in group["params"]]
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        copies += list(_tensors(getattr(optimizer, name, None) or []))
    master = total(copies)
    states = total(t for state in base.state.values() for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    offloaded = bool(getattr(optimizer, "cpu_offload", False) or getattr(optimizer, "offload_optimizer", False))
    buffers = {"module .grad": [p.grad for p in module], "fp32 copies' .grad": [p.grad for p in copies]}
    if optimizer is not base:
        buffers.update({name: list(_tensors(value)) for name, value in vars(optimizer).items() if "grad" in name})
    on_gpu = engine.device.type != "cpu"

    def cpu_side(name, tensor):
        return offloaded and ("cpu" in name or name == "fp32 copies' .grad" or (on_gpu and tensor.device.type == "cpu"))

    # the CPU side first: a buffer that is a view of the fp32 copies' .grad (offload_gradient_dict) is theirs
    buffers = {name: [t for t in ts if t is not None and t.dim() > 0] for name, ts in buffers.items()}  # no scalars
    offload_grads = total(t for name, ts in buffers.items() for t in ts if cpu_side(name, t))
    grads = total(t for name, ts in buffers.items() for t in ts if not cpu_side(name, t))
    return {
        "params": params,
        "grads": grads,
        "master": master,
        "optimizer_states": states,
        "offloaded": offloaded,
        "offload_grads": offload_grads,
    }


def watch_memory(engine) -> list[dict]:
    """From now on, `measured_memory(engine)` just before every `engine.step()`, that is after each
    micro-batch's backward pass, when the gradients are held, appended to the list returned.
    `unwatch_memory(engine)` stops it."""
    snapshots = []
    step = type(engine).step

    def measured_step(*args, **kwargs):
        snapshots.append(measured_memory(engine))
        return step(engine, *args, **kwargs)

    engine.step = measured_step
    return snapshots


def unwatch_memory(engine) -> None:
    engine.__dict__.pop("step", None)


def peak_memory(snapshots: list[dict]) -> dict:
    """The most each kind of state took over `watch_memory`'s snapshots (gradients come and go)."""
    if not snapshots:
        raise ValueError("no memory snapshots: watch_memory(engine) before the update to measure")
    return {key: max(s[key] for s in snapshots) for key in snapshots[0]}
