"""Checkers of notebook 07 (scaling with DeepSpeed): exercises 7.1 `make_ds_config`, 7.2 `ds_train_step`
and 7.3 DeepSpeed checkpoints, compared with `course_lib.distributed` in one CPU process. DeepSpeed itself
comes from `distributed._deepspeed()`, which imports it when a DeepSpeed case first runs (set up for the CPU
when there is no GPU), so 7.1's checks and this module's import do not wait for it."""

from __future__ import annotations

import tempfile
from typing import Callable

import torch

from course_lib import distributed

from .framework import expect_same_losses, module_parameters, run_cases, where_in_your_code
from .nb04 import masked_batches, same_training_state, training_setup


def _raised(call: Callable) -> dict:
    """For a case where the student's code must refuse: what it raised (its class and base classes, the
    message, where in their code), caught on purpose; {"raised": None} if it returned. The judge decides."""
    try:
        call()
    except NotImplementedError:  # a stub: the framework says so
        raise
    except Exception as e:
        return {
            "raised": [kind.__name__ for kind in type(e).__mro__],
            "message": str(e),
            "where": where_in_your_code(e),
        }
    return {"raised": None}


def _expect_value_error(got: dict, missing: str) -> None:
    """A `_raised` observation must be a ValueError (or a subclass); another error is a crash, said as the
    framework says one."""
    raised = got["raised"]
    if raised is None:
        raise AssertionError(missing)
    if "ValueError" not in raised:
        raise AssertionError(f"{raised[0]}: {got['message']}{got['where']}")


def check_make_ds_config(make_ds_config: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 7.1: `make_ds_config(micro_batch_size, grad_accum, world_size, precision, stage, offload_optimizer,
    max_grad_norm) -> dict` holds what `course_lib.distributed.ds_config` holds (batch sizes, bf16 / fp16,
    ZeRO stage, optimizer offload, clipping) and refuses what cannot work with a ValueError."""

    def get(config, path, default=None):
        for key in path.split("."):
            if not isinstance(config, dict) or key not in config:
                return default
            config = config[key]
        return config

    def offload(config):
        return get(config, "zero_optimization.offload_optimizer.device", "none") or "none"

    def same(micro, accum, world, precision="fp32", stage=0, offload_optimizer=False, max_grad_norm=1.0):
        def observe():
            return make_ds_config(
                micro,
                accum,
                world,
                precision=precision,
                stage=stage,
                offload_optimizer=offload_optimizer,
                max_grad_norm=max_grad_norm,
            )

        def judge(got):
            if not isinstance(got, dict):
                raise AssertionError(f"make_ds_config should return a dict, got {type(got).__name__}")
            expected = distributed.ds_config(
                micro,
                accum,
                world,
                bf16=precision == "bf16",
                fp16=precision == "fp16",
                stage=stage,
                offload_optimizer=offload_optimizer,
                max_grad_norm=max_grad_norm,
            )
            for key in (
                "train_batch_size",
                "train_micro_batch_size_per_gpu",
                "gradient_accumulation_steps",
                "gradient_clipping",
                "zero_optimization.stage",
            ):
                if get(got, key) != get(expected, key):
                    raise AssertionError(f"{key} is {get(got, key)!r}, expected {get(expected, key)!r}")
            for key in ("bf16.enabled", "fp16.enabled"):
                if bool(get(got, key, False)) != get(expected, key):
                    raise AssertionError(
                        f"{key} is {get(got, key)!r} for precision={precision!r}, expected {get(expected, key)}"
                    )
            if offload(got) != offload(expected):
                raise AssertionError(
                    f"zero_optimization.offload_optimizer.device is {offload(got)!r}, expected {offload(expected)!r}"
                )
            distributed.check_ds_config(got, world)  # nothing DeepSpeed would reject

        return observe, judge

    def refuses(what, **kwargs):
        def observe():
            args = dict(
                micro_batch_size=8, grad_accum=1, world_size=1, precision="fp32", stage=0, offload_optimizer=False
            )
            args.update(kwargs)
            return _raised(
                lambda: make_ds_config(
                    args.pop("micro_batch_size"), args.pop("grad_accum"), args.pop("world_size"), **args
                )
            )

        def judge(got):
            _expect_value_error(got, f"{what}: make_ds_config should raise a ValueError")

        return observe, judge

    run_cases(
        "7.1",
        [
            ("one CPU process, fp32, ZeRO 0", *same(32, 1, 1)),
            ("8 GPUs, bf16, ZeRO 2, accumulation 4", *same(16, 4, 8, "bf16", 2, max_grad_norm=0.5)),
            ("64 GPUs, fp16, ZeRO 3, optimizer offloaded", *same(8, 2, 64, "fp16", 3, True)),
            (
                "optimizer offload with ZeRO 0 is refused",
                *refuses("offload_optimizer=True with stage=0", offload_optimizer=True),
            ),
            ("an unknown precision is refused", *refuses("precision='fp8'", precision="fp8")),
        ],
        hidden_cases=[
            ("2 GPUs, bf16, ZeRO 1, offload, accumulation 8", *same(4, 8, 2, "bf16", 1, True, 0.0)),
            ("a ZeRO stage that does not exist is refused", *refuses("stage=4", stage=4)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _ds_engine(
    stage: int,
    bf16: bool,
    grad_accum: int,
    seed: int = 0,
    dropout: float = 0.0,
    clip: float = 0.0,
    optimizer: str = "sgd",
    micro: int = 3,
):
    """A small course model in a DeepSpeed engine (one CPU process). SGD by default: unlike Adam, its update
    shows any error in the gradients' scale (a loss divided twice by the accumulation, say)."""
    deepspeed = distributed._deepspeed()
    distributed.init_single_process()
    (model, adamw, scheduler), _ = training_setup(seed, dropout=dropout, warmup=2)
    chosen = torch.optim.SGD(model.parameters(), lr=0.5) if optimizer == "sgd" else adamw
    config = {
        **distributed.ds_config(micro, grad_accum, bf16=bf16, stage=stage, max_grad_norm=clip),
        "zero_allow_untested_optimizer": True,
    }
    quiet = deepspeed.utils.logger.level
    deepspeed.utils.logger.setLevel("ERROR")  # not its warning about SGD under ZeRO (allowed on purpose)
    try:
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=chosen, config=config, lr_scheduler=scheduler if optimizer != "sgd" else None
        )
    finally:
        deepspeed.utils.logger.setLevel(quiet)
    return engine


def _engine_parameters(engine) -> dict:
    """The engine's model parameters, name -> a copy (gathered whole under ZeRO 3)."""
    deepspeed = distributed._deepspeed()
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=engine.zero_optimization_stage() == 3):
        return {name: p.detach().clone() for name, p in engine.module.named_parameters()}


def _engine_state(engine) -> dict:
    """What a DeepSpeed checkpoint must restore, read through the objects' own tables (not methods a student's
    code may have replaced): the parameters (gathered under ZeRO 3), the innermost torch optimizer's state in
    parameter order (DeepSpeed's wrappers hold it in `.optimizer`; under ZeRO its parameters are the flat fp32
    partitions), the scheduler's step, the engine's step count and torch's RNG state."""
    deepspeed = distributed._deepspeed()
    own = object.__getattribute__(engine, "__dict__")
    module = own["module"] if "module" in own else own["_modules"]["module"]
    params = [p for _, p in module_parameters(module)]
    with deepspeed.zero.GatheredParameters(params, enabled=engine.zero_optimization_stage() == 3):
        parameters = {name: p.detach().clone() for name, p in module_parameters(module)}
    optimizer = own.get("optimizer")
    while optimizer is not None and type(optimizer).__module__.split(".")[0] != "torch":
        optimizer = object.__getattribute__(optimizer, "__dict__").get("optimizer")
    moments = []
    if optimizer is not None:
        table = object.__getattribute__(optimizer, "__dict__")
        state = dict(table["state"])
        order = [p for group in table["param_groups"] for p in group["params"]]
        # ZeRO 3 takes its partitions out of the groups between steps: then the state's own order
        kept = [state.get(p, {}) for p in order] if order else list(state.values())
        moments = [{k: v.clone() if torch.is_tensor(v) else v for k, v in dict(m).items()} for m in kept]
    scheduler = own.get("lr_scheduler")
    return {
        "parameters": parameters,
        "optimizer": moments,
        "scheduler_step": None if scheduler is None else object.__getattribute__(scheduler, "__dict__")["last_epoch"],
        "global_steps": own.get("global_steps"),
        "rng": torch.get_rng_state(),
    }


def _same_parameters(got: dict, expected: dict, what: str, atol: float = 1e-6) -> None:
    """Parameters observed (name -> tensor) against the reference's, name by name."""
    for name, y in expected.items():
        x = got.get(name) if isinstance(got, dict) else None
        if not isinstance(x, torch.Tensor) or x.shape != y.shape:
            raise AssertionError(f"{what}: parameter {name} is missing or has another shape")
        if not torch.allclose(x.float(), y.float(), rtol=1e-5, atol=atol):
            raise AssertionError(
                f"{what}: parameter {name} differs from the reference's "
                f"(largest difference {float((x.float() - y.float()).abs().max()):.3g})"
            )


def check_ds_train_step(ds_train_step: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 7.2: `ds_train_step(engine, micro_batches) -> loss` makes the update
    `course_lib.distributed.ds_train_step` makes: the engine's forward, token-weighted micro-batches,
    `engine.backward`, `engine.step` after every micro-batch."""

    def same_update(sizes, stage=0, bf16=False, steps=2, seed=0, clip=0.0, dropout=0.0):
        def observe():
            mine = _ds_engine(stage, bf16, len(sizes), seed, dropout, clip)
            updates = []
            for step in range(steps):
                batches = masked_batches(mine.module.config.vocab_size, sizes, seed=seed + 10 * step)
                torch.manual_seed(step)  # dropout draws from torch's global generator
                loss = ds_train_step(mine, batches)
                updates.append(
                    {"loss": loss, "global_steps": mine.global_steps, "parameters": _engine_parameters(mine)}
                )
            return updates

        def judge(got):
            reference = _ds_engine(stage, bf16, len(sizes), seed, dropout, clip)
            for step in range(steps):
                batches = masked_batches(reference.module.config.vocab_size, sizes, seed=seed + 10 * step)
                torch.manual_seed(step)
                expected = distributed.ds_train_step(reference, batches)["loss"]
                loss = got[step]["loss"]
                if not isinstance(loss, (float, int)) and not (torch.is_tensor(loss) and loss.numel() == 1):
                    raise AssertionError(f"ds_train_step should return the loss as a number, got {type(loss).__name__}")
                if abs(float(loss) - expected) > 1e-5 * max(1.0, abs(expected)):
                    raise AssertionError(
                        f"step {step + 1}: returned loss {float(loss):.6f}, expected {expected:.6f} "
                        f"(the mean over every masked token of the micro-batches)"
                    )
                if got[step]["global_steps"] != reference.global_steps:
                    raise AssertionError(
                        f"after update {step + 1} the engine has made {got[step]['global_steps']} optimizer "
                        f"steps, expected {reference.global_steps}: call engine.step() after every "
                        f"micro-batch (DeepSpeed updates at the last one)"
                    )
                _same_parameters(got[step]["parameters"], _engine_parameters(reference), f"after update {step + 1}")

        return observe, judge

    run_cases(
        "7.2",
        [
            ("ZeRO 0, fp32, one micro-batch", *same_update([3])),
            ("ZeRO 0, fp32, two micro-batches with different numbers of masked tokens", *same_update([3, 3], seed=1)),
            ("ZeRO 2, bf16, two micro-batches", *same_update([3, 3], stage=2, bf16=True, seed=2)),
        ],
        hidden_cases=[
            (
                "ZeRO 1, bf16, three micro-batches, dropout",
                *same_update([3, 3, 3], stage=1, bf16=True, seed=3, dropout=0.1),
            ),
            (
                "ZeRO 3, bf16, two micro-batches, clipping",
                *same_update([3, 3], stage=3, bf16=True, seed=4, clip=0.05),
            ),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_ds_checkpoint(
    save_ds_checkpoint: Callable, load_ds_checkpoint: Callable, hidden: bool | None = None, first_failure: bool = False
) -> None:
    """Exercise 7.3: `save_ds_checkpoint(engine, folder, step, data_state) -> path` and
    `load_ds_checkpoint(engine, path) -> {"step", "data", ...}` let a fresh engine go on exactly as the
    saved one did (weights, optimizer, scheduler, random state for dropout), at every ZeRO stage."""

    def run(engine, steps, first):
        losses = []
        for step in range(first, first + steps):
            batches = masked_batches(engine.module.config.vocab_size, [3, 3], seed=step)
            losses.append(distributed.ds_train_step(engine, batches)["loss"])
        return losses

    def data_state(before):
        return {"stream": {"epoch": 1, "index": 24 * before}}

    def resume_exactly(stage, bf16, seed, before, after):
        def observe():
            with tempfile.TemporaryDirectory() as tmp:
                engine = _ds_engine(stage, bf16, 2, seed, dropout=0.1, optimizer="adamw")
                torch.manual_seed(seed)
                run(engine, before, 0)
                path = save_ds_checkpoint(engine, tmp, before, data_state(before))
                run(engine, after, before)  # the saved run goes on, as a training would
                fresh = _ds_engine(stage, bf16, 2, seed + 1, dropout=0.1, optimizer="adamw")
                torch.manual_seed(12345)  # whatever happened in between
                state = load_ds_checkpoint(fresh, path)
                loaded = _engine_state(fresh)  # what the load put back, before training on
                resumed = run(fresh, after, before)
                return {
                    # what the judge reads of the client state (the rest, random states, need not be plain)
                    "state": {k: state.get(k) for k in ("step", "data")} if isinstance(state, dict) else None,
                    "state_type": type(state).__name__,
                    "state_repr": None if isinstance(state, dict) else repr(state)[:300],
                    "loaded": loaded,
                    "resumed": resumed,
                    "parameters": _engine_parameters(fresh),
                }

        def judge(got):
            engine = _ds_engine(stage, bf16, 2, seed, dropout=0.1, optimizer="adamw")
            torch.manual_seed(seed)
            run(engine, before, 0)
            saved = _engine_state(engine)
            straight = run(engine, after, before)  # the run that never stopped
            state, expected_data = got["state"], data_state(before)
            if state is None or state.get("step") != before or state.get("data") != expected_data:
                shown = repr(state) if state is not None else got["state_repr"]
                raise AssertionError(
                    f"load_ds_checkpoint returned {shown}; expected step {before} and the data "
                    f"state {expected_data!r} (keep them in the client state)"
                )
            counters = (("scheduler_step", "the scheduler's step"), ("global_steps", "the engine's step count"))
            same_training_state(
                got["loaded"], saved, f"right after load_ds_checkpoint (saved at step {before})", counters
            )
            expect_same_losses(got["resumed"], straight, before, "weights, optimizer, scheduler, random state?")
            _same_parameters(got["parameters"], _engine_parameters(engine), "after resuming and training on", atol=0)

        return observe, judge

    run_cases(
        "7.3",
        [
            (
                "ZeRO 0, fp32: save at step 2, resume, 2 more steps with dropout: same losses",
                *resume_exactly(0, False, 0, 2, 2),
            ),
            ("ZeRO 2, bf16: save at step 3: same losses", *resume_exactly(2, True, 1, 3, 2)),
        ],
        hidden_cases=[
            ("ZeRO 3, bf16, save at step 1", *resume_exactly(3, True, 2, 1, 3)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
