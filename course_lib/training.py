"""Notebook 04: the training loop, written out.

    optimizer = make_optimizer(model, config)            # AdamW; no weight decay on norms and biases
    scheduler = make_scheduler(optimizer, config)        # linear warmup, then linear or cosine decay
    metrics = train_step(model, micro_batches, optimizer, scheduler, max_grad_norm=1.0)   # one update
    evaluate(model, eval_batches)                        # {"loss", "ppl", "acc", "tokens"} on fixed masks
    save_checkpoint(path, model=..., optimizer=..., scheduler=..., step=..., data_state=...)

`train(...)` puts them together: an experiment folder (`new_experiment`), metrics in `metrics.jsonl`
and TensorBoard, evaluation every `eval_every` steps, atomic checkpoints every `save_every` steps
(the last `keep_last` kept), and resume from the latest one, so that a run killed at any moment and
started again gives the very same losses as one never stopped.

Step numbering: step s is the s-th optimizer update. The row `{"step": s, "loss": ...}` is the loss of
the batch that update s was computed from, and the checkpoint `step-000000s.pt` holds the state after
s updates. Step 0 is the untouched model (an eval row at step 0 shows the loss at initialisation).

Exact equality across processes: on a CPU, PyTorch's matrix products come from Intel MKL, whose rounding
may depend on how the inputs happen to be aligned in memory, which changes from process to process; a
resumed run then matches to ~1e-7, not bit for bit. `MKL_CBWR=AUTO,STRICT` in the environment (set before
Python starts; the test suite does) makes them bitwise reproducible. On a GPU, add
`torch.use_deterministic_algorithms(True)` and `CUBLAS_WORKSPACE_CONFIG=:4096:8`.

Checkpoints, experiment folders and the metrics log live in `course_lib.checkpoints`. Its public names are
imported here (listed at the imports), so `training.save_checkpoint`, `training.load_checkpoint`,
`training.latest_checkpoint`, `training.new_experiment`, `training.read_metrics` ... are the same objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import quiet
from .checkpoints import (  # noqa: F401  (every public name of course_lib.checkpoints, as training.<name>)
    CheckpointError,
    CheckpointSaveError,
    MetricsLog,
    checkpoint_name,
    checkpoint_step,
    find_experiment,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    new_experiment,
    prune_checkpoints,
    read_metrics,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .device import PRECISIONS, precision_notice, resolve_precision
from .masking import IGNORE_INDEX, pad_batch
from .seeding import set_seed

SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class TrainConfig:
    """Everything about how a model is trained (what it is and what it reads are configured elsewhere)."""

    max_steps: int = 1000  # optimizer updates
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per update: an update sees batch_size * grad_accum sequences
    lr: float = 5e-4  # peak learning rate, reached at the end of warmup
    warmup_steps: int = 100
    schedule: str = "linear"  # after warmup: "linear" or "cosine" decay to min_lr_ratio * lr, or "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01  # on matrices only (see param_groups)
    beta1: float = 0.9
    beta2: float = 0.98  # RoBERTa's; 0.999 is unstable with large learning rates
    eps: float = 1e-6
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    # "bf16" autocast (CPU or GPU), "fp16" autocast + GradScaler (GPU only), or "auto": fp32 on a CPU, 16 bits on
    # a GPU; `train` trains in device.resolve_precision's choice (bf16 on a GPU without bf16 units: fp16)
    precision: str = "fp32"
    log_every: int = 1  # a metrics row every log_every steps (the mean loss of those steps)
    eval_every: int = 100
    save_every: int = 100
    keep_last: int = 3  # checkpoints kept; older ones are deleted
    seed: int = 0

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep_last"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        for name in ("lr", "weight_decay", "eps", "max_grad_norm", "min_lr_ratio", "beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a number >= 0, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        for name in ("beta1", "beta2", "min_lr_ratio"):
            if getattr(self, name) > 1:
                raise ValueError(f"TrainConfig.{name} must be between 0 and 1, got {getattr(self, name)!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule={self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}: choose one of {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- optimizer and schedule


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on matrices (linear layers, embeddings), none on vectors.

    Decay pulls weights towards 0. For a LayerNorm's gain (which should stay near 1) and for biases
    that is no regularisation, just a bias towards a worse model; BERT, RoBERTa and HF's Trainer all
    leave them out. Every vector parameter in this model is a norm or a bias, so `ndim < 2` is the rule.
    Frozen parameters (requires_grad False) are left out altogether."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps
    )


def lr_factor(
    step: int, warmup_steps: int, max_steps: int, schedule: str = "linear", min_lr_ratio: float = 0.0
) -> float:
    """The learning rate of update step+1 as a fraction of the peak (`step` updates done so far).

    Warmup rises linearly from 0 (step 0) to 1 (step warmup_steps); then linear or cosine decay takes
    it to `min_lr_ratio` at max_steps. With min_lr_ratio 0 this is exactly transformers'
    `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup` (the tests compare): the very
    first update then has learning rate 0 (Adam's first step would be its largest, so nothing is lost).
    """
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, config.warmup_steps, config.max_steps, config.schedule, config.min_lr_ratio),
    )


def follow_schedule(optimizer, scheduler, step: int) -> None:
    """Set the learning rate of update step+1 from this run's schedule. A loaded optimizer comes back with
    the rate the saved run's schedule set; the two differ when max_steps changed (a run extended from 3 to
    8 steps would otherwise start its extension at the old schedule's final rate, 0)."""
    for group, lr_lambda in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = group["initial_lr"] * lr_lambda(step)


def autocast(precision: str, device: torch.device):
    """The context a forward pass runs in: nothing for fp32, `torch.autocast` for bf16 / fp16 ("auto": the
    precision `device.resolve_precision` chooses for `device`).

    Under autocast, matrix products run in 16 bits while the weights, their gradients and the
    optimizer states stay fp32 ("mixed" precision). bf16 has fp32's range, so it needs nothing more;
    fp16's range is small, so small gradients underflow to 0 unless the loss is scaled up first (GradScaler)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA GPU (its GradScaler is CUDA-only); use 'bf16' on a CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def make_scaler(precision: str, device: torch.device):
    """A GradScaler for fp16, and for "auto" where that is fp16 (None otherwise)."""
    if precision == "auto":
        precision = resolve_precision(precision, device)
    return torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def hidden_size(model: torch.nn.Module) -> int | None:
    """The model's hidden size (the course's and Hugging Face's models keep it in `.config`), or None: what
    "auto" precision weighs on a CPU with AMX (`device.auto_precision`)."""
    return getattr(getattr(model, "config", None), "hidden_size", None)


def _to(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# --------------------------------------------------------------------------- one step, one evaluation


def train_step(
    model,
    micro_batches: list[dict],
    optimizer,
    scheduler,
    *,
    max_grad_norm: float = 1.0,
    precision: str = "fp32",
    scaler=None,
) -> dict:
    """One optimizer update from one or more micro-batches (gradient accumulation).

    Each micro-batch is a dict with input_ids, attention_mask and labels (-100 where nothing is
    predicted), like the collator returns. The loss of the update is the mean cross-entropy over every
    masked token of all the micro-batches: each micro-batch's mean is weighted by its share of the
    masked tokens, so the update is the same as one big batch would give (a plain mean of micro-batch
    means would give a batch with few masked tokens as much say as one with many).

    Returns {"loss", "lr" (the rate this update used), "grad_norm" (before clipping), "tokens" (masked)}.
    """
    model.train()
    device = _device(model)
    counts = [int((batch["labels"] != IGNORE_INDEX).sum()) for batch in micro_batches]
    total = sum(counts)
    if total == 0:
        raise ValueError("train_step: no masked token in any micro-batch, so there is no loss to learn from")
    lr = optimizer.param_groups[0]["lr"]
    loss_value = 0.0
    for batch, count in zip(micro_batches, counts):
        if count == 0:
            continue
        batch = _to(batch, device)
        with autocast(precision, device):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        loss = out.loss.float() * (count / total)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_value += loss.item()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if scaler is not None:
        scaler.step(optimizer)  # skipped if the gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "tokens": total}


@torch.no_grad()
def evaluate(model, batches, precision: str = "fp32") -> dict:
    """Loss, perplexity and accuracy of the masked-token predictions over `batches` (already masked,
    e.g. `fixed_eval_masks` + `pad_batch`), every masked token counting once.

    perplexity = exp(loss): the number of equally likely tokens the model is, on average, choosing
    among at a masked position. accuracy: how often its top token is the original one.
    Leaves the model in the mode (train / eval) it found it in."""
    was_training = model.training
    model.eval()
    device = _device(model)
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = _to(batch, device)
        labels = batch["labels"]
        with autocast(precision, device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
        where = labels != IGNORE_INDEX
        if logits.dim() == 3:  # every position; a masked-only head returns the labelled rows already
            logits = logits[where]
        targets = labels[where]
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += int((logits.argmax(-1) == targets).sum())
        count += int(where.sum())
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the eval batches have no masked token (labels are all -100)")
    loss = loss_sum / count
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "acc": correct / count, "tokens": count}


def eval_batches(masked_examples: list[dict], batch_size: int, pad_token_id: int) -> list[dict]:
    """Fixed-mask eval examples (`fixed_eval_masks`) in padded batches, in order."""
    return [
        pad_batch(masked_examples[i : i + batch_size], pad_token_id) for i in range(0, len(masked_examples), batch_size)
    ]


# --------------------------------------------------------------------------- where the data is


class BatchStream:
    """Batches of example indices, reshuffled every epoch, that can say where they are and start again there.

    Epoch e visits the examples in the order `torch.randperm(n)` draws from a generator seeded with
    seed + e, in batches of batch_size (a last partial batch is dropped). The position is just
    (epoch, index): `state_dict()` / `load_state_dict()`, saved in every checkpoint."""

    def __init__(self, n_examples: int, batch_size: int, seed: int = 0):
        if n_examples < batch_size:
            raise ValueError(f"{n_examples} training examples are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self.epoch, self.index, self._order, self._order_epoch = 0, 0, None, None

    def _epoch_order(self) -> torch.Tensor:
        if self._order_epoch != self.epoch:
            self._order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            self._order_epoch = self.epoch
        return self._order

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.index + self.batch_size > self.n:
            self.epoch, self.index = self.epoch + 1, 0
        batch = self._epoch_order()[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n": self.n, "batch_size": self.batch_size, "seed": self.seed}
        theirs = {key: state.get(key) for key in mine}
        if mine != theirs:
            raise ValueError(
                f"the checkpoint's data stream was made for {theirs}, this one is {mine}: "
                f"resuming on other data or another batch size would not continue the same run"
            )
        self.epoch, self.index = state["epoch"], state["index"]


# --------------------------------------------------------------------------- the loop


class PlainLoop:
    """What `train` does at an update and at a checkpoint, for a model on one device (a CPU or one GPU):
    this notebook's optimizer, schedule, `train_step` and checkpoint files.

    `train` asks a loop for `step(micro_batches)`, `save(folder, step, data_state, extra)` and
    `load(path)`; notebook 07's `DeepSpeedLoop` and `DDPLoop` (course_lib.distributed) answer the same
    questions for DeepSpeed and for several processes, and everything else in `train` stays as it is."""

    rank, world_size = 0, 1

    def __init__(self, model, config: TrainConfig):
        self.model = self.module = model  # `module`: the plain model, for evaluation
        self.config = config
        # what this device trains in: bf16 on a GPU without bf16 units is fp16 (with the scaler), "auto" a choice
        self.precision = resolve_precision(config.precision, _device(model), hidden_size(model))
        self.optimizer = make_optimizer(model, config)
        self.scaler = make_scaler(self.precision, _device(model))
        self.scheduler = make_scheduler(self.optimizer, config)

    def step(self, micro_batches: list[dict]) -> dict:
        return train_step(
            self.model,
            micro_batches,
            self.optimizer,
            self.scheduler,
            max_grad_norm=self.config.max_grad_norm,
            precision=self.precision,
            scaler=self.scaler,
        )

    def save(self, folder: Path, step: int, data_state: dict, extra: dict) -> None:
        save_checkpoint(
            folder / checkpoint_name(step),
            model=self.module,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            step=step,
            data_state=data_state,
            extra=extra,
        )
        prune_checkpoints(folder, self.config.keep_last)

    def load(self, path) -> dict:
        state = load_checkpoint(
            path, model=self.module, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler
        )
        follow_schedule(self.optimizer, self.scheduler, state["step"])
        return state

    def shard(self, stream):
        return stream  # one process reads every batch


def train(
    model,
    train_examples,
    eval_data: list[dict] | None,
    config: TrainConfig,
    *,
    collator,
    folder,
    resume: str | Path | None = "auto",
    progress: bool = True,
    on_step=None,
    stream=None,
    loop=None,
    train_eval_data: list[dict] | None = None,
) -> dict:
    """Train `model` for config.max_steps updates, logging to and checkpointing in the experiment `folder`.

    train_examples: anything indexable whose items the collator takes (a 2-D tensor of packed blocks,
    a list of dicts); eval_data: padded, fixed-mask eval batches (`eval_batches`), or None.
    resume: "auto" continues from the newest checkpoint in folder/checkpoints if there is one; a path
    continues from that checkpoint; None starts afresh (and refuses a folder that has checkpoints).
    on_step(step, row): called after each update (after its logging, evaluation and checkpoint).
    stream: where the batches' example indices come from (default: `BatchStream`, shuffled epochs); any
    iterator of index lists with state_dict / load_state_dict, e.g. notebook 05's `LanguageBatchSampler`.
    loop: how an update and a checkpoint are made (default: `PlainLoop(model, config)`; notebook 07's
    DeepSpeed and multi-process loops). Returns the last eval metrics (or {} without eval data).
    train_eval_data: fixed-mask batches of *training* text, evaluated with eval_data and logged as
    `train_eval_loss`: the same questions on text the model has seen, so that the gap to `eval_loss` shows
    overfitting (the per-step training loss cannot: it is measured on other masks, as the model changes).
    config.precision is resolved for the model's device first (`device.resolve_precision`: "auto" chosen, bf16
    on a GPU without bf16 units trains in fp16 with loss scaling), with a line saying so; the checkpoints
    record the precision the run trained in.
    """
    folder = Path(folder)
    ckpt_dir = folder / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    where, hidden = _device(model), hidden_size(model)
    precision = resolve_precision(config.precision, where, hidden)
    notice = precision_notice(config.precision, precision, where, hidden)
    config = dataclasses.replace(config, precision=precision)
    loop = loop if loop is not None else PlainLoop(model, config)
    main = loop.rank == 0  # in a multi-process run, process 0 logs and shows progress
    if notice and main:
        print(notice)
    if stream is None:  # every process draws the same global batches; each reads its own share of them
        stream = BatchStream(len(train_examples), config.batch_size * loop.world_size, seed=config.seed)
    stream = loop.shard(stream)

    start = state = None
    if resume == "auto":  # the newest checkpoint; an unreadable one is skipped for the one before it
        start, state = load_latest(ckpt_dir, loop.load, warn=main)
    elif resume:
        start = Path(resume)
        state = loop.load(start)
    elif latest_checkpoint(ckpt_dir):
        raise ValueError(f"{folder} already holds checkpoints; resume='auto' continues that run, or use a new folder")
    step = 0
    if start is not None:
        step = state["step"]
        try:
            stream.load_state_dict(state["data"]["stream"])
        except ValueError as e:  # other data than the run had (a text file that grew ...): that checkpoint cannot go on
            raise CheckpointError(f"cannot resume from {start}: {e}") from None
        if hasattr(collator, "load_state_dict") and "collator" in state["data"]:
            collator.load_state_dict(state["data"]["collator"])
        if main:
            print(f"resumed from {start} at step {step}")
    else:
        set_seed(config.seed)
    log = MetricsLog(folder, resume_step=step if start is not None else None, write=main)
    last_eval = {}

    def run_eval(at: int) -> dict:
        result = evaluate(loop.module, eval_data, config.precision)
        seen = {}
        if train_eval_data:
            seen = {"train_eval_loss": evaluate(loop.module, train_eval_data, config.precision)["loss"]}
        log.log(at, eval_loss=result["loss"], eval_ppl=result["ppl"], eval_acc=result["acc"], **seen)
        return result

    def data_state() -> dict:
        state = {"stream": stream.state_dict()}
        if hasattr(collator, "state_dict"):
            state["collator"] = collator.state_dict()
        return state

    try:
        if step == 0 and eval_data:
            last_eval = run_eval(0)  # the loss at initialisation
        bar = tqdm(total=config.max_steps, initial=step, desc="train", unit="step", disable=not (progress and main))
        window, started = [], time.perf_counter()
        while step < config.max_steps:
            micro = [collator([train_examples[int(i)] for i in next(stream)]) for _ in range(config.grad_accum)]
            result = loop.step(micro)
            step += 1
            window.append(result)
            row = None
            if step % config.log_every == 0 or step == config.max_steps:
                row = {
                    "loss": sum(r["loss"] for r in window) / len(window),
                    "lr": result["lr"],
                    "grad_norm": result["grad_norm"],
                    "tokens": sum(r["tokens"] for r in window),
                    "seconds": time.perf_counter() - started,
                }
                log.log(step, **row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}")
                window = []
            if eval_data and (step % config.eval_every == 0 or step == config.max_steps):
                last_eval = run_eval(step)
            if step % config.save_every == 0 or step == config.max_steps:
                loop.save(ckpt_dir, step, data_state(), {"config": config.to_dict()})
            bar.update(1)
            if on_step is not None:
                on_step(step, row)
        bar.close()
        if step == config.max_steps and eval_data and not last_eval:
            last_eval = evaluate(loop.module, eval_data, config.precision)
    finally:
        log.close()
    return last_eval


# --------------------------------------------------------------------------- the Hugging Face path


def hf_trainer(
    hf_model, train_examples, collator, config: TrainConfig, output_dir, progress: bool = False, **overrides
):
    """A `transformers.Trainer` set up like `train(...)`: the same optimizer settings, schedule,
    clipping, accumulation, precision and seed; the course collator; a loss row every step.

    overrides: any further TrainingArguments. Returns the Trainer; `.train()` it, then read the
    losses from `trainer.state.log_history`."""
    from transformers import Trainer, TrainingArguments

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the Trainer's (use_cpu below)
    precision = resolve_precision(config.precision, device, hidden_size(hf_model))
    if precision != config.precision:
        print(precision_notice(config.precision, precision, device, hidden_size(hf_model)))
    args = dict(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.schedule if config.schedule != "constant" else "constant_with_warmup",
        weight_decay=config.weight_decay,
        adam_beta1=config.beta1,
        adam_beta2=config.beta2,
        adam_epsilon=config.eps,
        max_grad_norm=config.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_drop_last=True,
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
    )
    args.update(overrides)
    trainer = Trainer(
        model=hf_model, args=TrainingArguments(**args), train_dataset=list(train_examples), data_collator=collator
    )
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it would print every log row
    return trainer


def fill_mask_pipeline(folder):
    """`pipeline("fill-mask")` on an exported model folder (model and tokenizer), offline, on the CPU."""
    from transformers import pipeline  # here: transformers takes seconds to import

    quiet.no_progress_bars()
    return pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cpu")


def fill_mask_examples(
    texts: list[str], tokenizer, n: int, seed: int = 0, min_words: int = 5, max_words: int = 30
) -> list[tuple[str, str]]:
    """Up to n (masked text, answer) pairs: in each of n held-out texts (5-30 words, picked with `seed`),
    one word that the tokenizer keeps whole (one token with its leading space) replaced by the mask
    token, so that fill-mask, which predicts one token, can get it exactly right."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    examples = []
    limit = getattr(tokenizer, "model_max_length", None) or 10**9
    for i in order:
        words = texts[i].split(" ")
        if not min_words <= len(words) <= max_words or len(tokenizer(texts[i], verbose=False)["input_ids"]) > limit:
            continue
        candidates = [
            j
            for j, w in enumerate(words)
            if j > 0
            and w.isalpha()
            and len(w) >= 3
            and len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1
        ]
        if not candidates:
            continue
        j = rng.choice(candidates)
        examples.append((" ".join(words[:j] + [tokenizer.mask_token] + words[j + 1 :]), words[j]))
        if len(examples) == n:
            break
    return examples


def fill_mask_accuracy(pipe, examples: list[tuple[str, str]], top_k: int = 5) -> tuple[float, list[list[dict]]]:
    """Top-1 accuracy of a fill-mask pipeline on (masked text, answer) pairs, and its predictions."""
    scores = fill_mask_scores(pipe, examples, top_k)
    return scores["top1"], scores["predictions"]


def fill_mask_scores(pipe, examples: list[tuple[str, str]], top_k: int = 5) -> dict:
    """A fill-mask pipeline judged on (masked text, answer) pairs: top-1 and top-k accuracy, and how many
    distinct top-1 answers it gives (a model that answers 'the' everywhere has 1); with its predictions."""
    if not examples:
        raise ValueError("no fill-mask examples to score")
    predictions = pipe([text for text, _ in examples], top_k=top_k, batch_size=32)
    firsts = [top[0]["token_str"].strip() for top in predictions]
    top1 = sum(first == answer for first, (_, answer) in zip(firsts, examples)) / len(examples)
    topk = sum(
        any(p["token_str"].strip() == answer for p in top) for top, (_, answer) in zip(predictions, examples)
    ) / len(examples)
    return {"top1": top1, f"top{top_k}": topk, "distinct_answers": len(set(firsts)), "predictions": predictions}


def most_frequent_answer(examples: list[tuple[str, str]]) -> tuple[str, float]:
    """The baseline a fill-mask accuracy must beat: the commonest answer word, and the accuracy of always
    answering it (a model on the unigram plateau scores about this)."""
    from collections import Counter

    if not examples:
        raise ValueError("no fill-mask examples")
    word, count = Counter(answer for _, answer in examples).most_common(1)[0]
    return word, count / len(examples)
