"""Checkers of notebook 04 (the training loop): exercises 4.1 `train_step`, 4.2 `evaluate` and
4.3 checkpoints, compared with `course_lib.training`, and 4.4 `no_context_token_loss` (part 4, before 4.3 in
the notebook), compared with `course_lib.baselines`. The batch and model builders here serve notebook 03's
checkers (`padded_batch`) and notebook 07's (`training_setup`, `masked_batches`) too."""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path
from typing import Callable

import torch

from course_lib import baselines, training
from course_lib.model import EncoderConfig, EncoderForMaskedLM

from .framework import expect_same_losses, module_modes, module_parameters, run_cases, where_in_your_code


def padded_batch(vocab: int, batch: int = 3, seq: int = 20, seed: int = 0):
    """Token ids and attention mask of `batch` rows: <s> words </s>, the second and third rows padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    for row, length in enumerate([seq, seq - 6, 7][:batch]):
        ids[row, 0], ids[row, length - 1] = 0, 2
        ids[row, length:] = 1
        attention_mask[row, length:] = 0
    return ids, attention_mask


def training_setup(seed=0, hidden=32, layers=2, vocab=120, dropout=0.0, lr=1e-2, warmup=2, max_steps=20, **config):
    """A small course model, its AdamW (no decay on norms and biases) and warmup+linear schedule, built
    twice from the same seed: one for the student's code, one for the reference."""
    train_config = training.TrainConfig(lr=lr, warmup_steps=warmup, max_steps=max_steps, weight_decay=0.01)
    pairs = []
    for _ in range(2):
        torch.manual_seed(seed)
        model = EncoderForMaskedLM(
            EncoderConfig(
                vocab_size=vocab,
                hidden_size=hidden,
                num_heads=4,
                num_layers=layers,
                intermediate_size=2 * hidden,
                max_length=24,
                dropout=dropout,
                attention_dropout=dropout,
                **config,
            )
        )
        optimizer = training.make_optimizer(model, train_config)
        pairs.append((model, optimizer, training.make_scheduler(optimizer, train_config)))
    return pairs


def masked_batches(vocab: int, sizes: list[int], seed: int = 0, seq: int = 24, p: float = 0.15):
    """Padded, masked batches as the collator returns them; `sizes` rows each, with different mask counts."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i, rows in enumerate(sizes):
        ids, attention_mask = padded_batch(vocab, batch=min(rows, 3), seq=seq, seed=seed + i)
        if rows > 3:
            extra = torch.randint(5, vocab, (rows - 3, seq), generator=g)
            ids, attention_mask = torch.cat([ids, extra]), torch.cat([attention_mask, torch.ones_like(extra)])
        chosen = (torch.rand(ids.shape, generator=g) < p * (1 + i)) & (ids > 4)
        chosen[0, 1] = True
        labels = torch.where(chosen, ids, -100)
        batches.append({"input_ids": torch.where(chosen, 4, ids), "attention_mask": attention_mask, "labels": labels})
    return batches


def parameters(model) -> dict:
    """A copy of every parameter of `model` by name: what a case observes of a model the student's code trained."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def training_state(model, optimizer, scheduler) -> dict:
    """What a checkpoint must restore, read through the objects' own tables (not methods a student's code may
    have replaced): the parameters, the optimizer's per-parameter state in parameter order, the scheduler's
    step and the torch RNG state."""
    order = [p for group in object.__getattribute__(optimizer, "__dict__")["param_groups"] for p in group["params"]]
    state = object.__getattribute__(optimizer, "__dict__")["state"]
    return {
        "parameters": {name: p.detach().clone() for name, p in module_parameters(model)},
        "optimizer": [
            {k: v.clone() if torch.is_tensor(v) else v for k, v in dict(state.get(p, {})).items()} for p in order
        ],
        "scheduler_step": object.__getattribute__(scheduler, "__dict__")["last_epoch"],
        "rng": torch.get_rng_state(),
    }


def same_training_state(
    got: dict, expected: dict, where: str, counters=(("scheduler_step", "the scheduler's step"),)
) -> None:
    """A loaded state (`training_state`, or exercise 7.3's engine state) must equal the one the run had when it
    saved, exactly: weights, optimizer moments, `counters` (key, what it is) and torch's RNG. `where` starts
    each message ("right after load_checkpoint (saved at step 2)")."""
    same = set(got["parameters"]) == set(expected["parameters"]) and all(
        torch.equal(torch.as_tensor(got["parameters"][k]), v) for k, v in expected["parameters"].items()
    )
    if not same:
        raise AssertionError(f"{where}, the model's weights are not those saved")
    if len(got["optimizer"]) != len(expected["optimizer"]) or any(
        set(a) != set(b) or any(not torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in b)
        for a, b in zip(got["optimizer"], expected["optimizer"])
    ):
        raise AssertionError(f"{where}, the optimizer's state (its moments and step counts) is not the one saved")
    for key, what in counters:
        if got[key] != expected[key]:
            raise AssertionError(f"{where}, {what} is {got[key]!r}, not {expected[key]!r}")
    if not torch.equal(torch.as_tensor(got["rng"]), expected["rng"]):
        raise AssertionError(f"{where}, torch's random state is not the one saved (dropout would differ)")


def same_parameters(got: dict, expected, what: str, atol: float = 1e-6) -> None:
    """`got` (parameter name -> tensor, as `parameters` observed them) must be the `expected` model's."""
    for name, y in expected.named_parameters():
        x = got[name]
        if x.shape != y.shape or not torch.allclose(x, y.detach(), rtol=1e-5, atol=atol):
            largest = float((x - y).detach().abs().max()) if x.shape == y.shape else float("inf")
            raise AssertionError(
                f"{what}: parameter {name} differs from the reference's (largest difference {largest:.3g})"
            )


def check_train_step(train_step: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 4.1: `train_step(model, micro_batches, optimizer, scheduler, max_grad_norm) -> loss` makes
    the update `course_lib.training.train_step` makes (token-weighted accumulation, clipping, schedule)."""

    def same_update(sizes, max_grad_norm=1.0, steps=1, seed=0, lr=1e-2, dropout=0.0, **config):
        def setup():
            return training_setup(seed, dropout=dropout, lr=lr, **config)[0]

        def batches_of(model, step):
            return masked_batches(model.config.vocab_size, sizes, seed=seed + 10 * step)

        def observe():
            model, opt, sched = setup()
            updates = []
            for step in range(steps):
                batches = batches_of(model, step)
                torch.manual_seed(step)  # dropout draws from the global RNG
                loss = train_step(model, batches, opt, sched, max_grad_norm=max_grad_norm)
                number = isinstance(loss, (float, int)) or torch.is_tensor(loss)
                updates.append(
                    {
                        "loss": loss if number else None,
                        "loss_type": type(loss).__name__,
                        "parameters": parameters(model),
                        "scheduler_steps": sched.last_epoch,
                    }
                )
            return updates

        def judge(got):
            ref, ref_opt, ref_sched = setup()
            assert len(got) == steps, f"observed {len(got)} updates, expected {steps}"
            for step, update in enumerate(got):
                batches = batches_of(ref, step)
                torch.manual_seed(step)
                expected = training.train_step(ref, batches, ref_opt, ref_sched, max_grad_norm=max_grad_norm)["loss"]
                loss = update["loss"]
                if not isinstance(loss, (float, int)) and not (torch.is_tensor(loss) and loss.numel() == 1):
                    raise AssertionError(f"train_step should return the loss as a number, got {update['loss_type']}")
                if abs(float(loss) - expected) > 1e-5 * max(1.0, abs(expected)):
                    raise AssertionError(
                        f"step {step + 1}: returned loss {float(loss):.6f}, expected {expected:.6f} "
                        f"(the mean over every masked token of the micro-batches)"
                    )
                same_parameters(update["parameters"], ref, f"after step {step + 1}")
                if update["scheduler_steps"] != ref_sched.last_epoch:
                    raise AssertionError(
                        f"after step {step + 1} the scheduler has taken {update['scheduler_steps']} steps, "
                        f"expected {ref_sched.last_epoch}: step it once per update"
                    )

        return observe, judge

    def clipping_setup():
        return training_setup(1, warmup=0, lr=1e-3)[0]

    def clipping_batches(model):
        return masked_batches(model.config.vocab_size, [3], seed=5)

    def clipped_step():
        model, opt, sched = clipping_setup()
        train_step(model, clipping_batches(model), opt, sched, max_grad_norm=1e-4)
        return parameters(model)

    def clip_changes_the_update(got):
        ref, ref_opt, ref_sched = clipping_setup()
        batches = clipping_batches(ref)
        training.train_step(ref, batches, ref_opt, ref_sched, max_grad_norm=1e-4)
        same_parameters(got, ref, "with max_grad_norm=1e-4 (clip before the optimizer step)")
        unclipped, opt2, sched2 = clipping_setup()
        training.train_step(unclipped, batches, opt2, sched2, max_grad_norm=0.0)
        before = dict(clipping_setup()[0].named_parameters())
        with torch.no_grad():
            moved_clipped = sum(float((got[name] - b).abs().sum()) for name, b in before.items())
            moved_free = sum(float((a - before[name]).abs().sum()) for name, a in unclipped.named_parameters())
        if not moved_clipped < moved_free:
            raise AssertionError("with a tiny max_grad_norm the update should be smaller than without clipping")

    run_cases(
        "4.1",
        [
            ("one micro-batch", *same_update([3])),
            ("two micro-batches with different numbers of masked tokens", *same_update([3, 4])),
            ("clipping", clipped_step, clip_changes_the_update),
            ("three updates in a row (warmup, zeroed gradients)", *same_update([2, 3], steps=3, max_grad_norm=0.5)),
        ],
        hidden_cases=[
            ("three micro-batches, dropout, other seed", *same_update([3, 2, 5], seed=3, dropout=0.1, steps=2)),
            ("masked-only head", *same_update([4, 3], seed=4, masked_only=True, steps=2)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_evaluate(evaluate: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 4.2: `evaluate(model, batches) -> {"loss", "ppl", "acc"}` as `course_lib.training.evaluate`:
    token-weighted over every masked token, in eval mode, leaving the model's mode as it was."""

    def same_metrics(sizes, seed=0, dropout=0.1, train_mode=True, **config):
        def setup():
            (model, _, _), _ = training_setup(seed, dropout=dropout, **config)
            model.train(train_mode)
            return model, masked_batches(model.config.vocab_size, sizes, seed=seed)

        def observe():
            model, batches = setup()
            torch.manual_seed(seed)  # an evaluate that leaves dropout on draws from the global RNG
            metrics = evaluate(model, batches)
            return {"metrics": metrics, "modes": module_modes(model)}  # every submodule's flag, not the top one

        def judge(got):
            model, batches = setup()
            expected = training.evaluate(model, batches)
            wrong = sorted(name or "the model" for name, flag in got["modes"].items() if flag != train_mode)
            if wrong:
                raise AssertionError(
                    f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} left in "
                    f"{'eval' if train_mode else 'train'} mode; put the model back in the mode it was in "
                    "(model.train(mode) sets every submodule; setting model.training sets only the top one)"
                )
            metrics = got["metrics"]
            if not isinstance(metrics, dict) or not {"loss", "ppl", "acc"} <= set(metrics):
                raise AssertionError(f"evaluate should return a dict with loss, ppl and acc; got {metrics!r}")
            for key, tolerance in (("loss", 1e-5), ("ppl", 1e-4), ("acc", 1e-9)):
                value = float(metrics[key])
                if abs(value - expected[key]) > tolerance * max(1.0, abs(expected[key])):
                    raise AssertionError(f"{key}: got {value:.6f}, expected {expected[key]:.6f}")

        return observe, judge

    run_cases(
        "4.2",
        [
            ("one batch, model in train mode (dropout must be off)", *same_metrics([3])),
            ("batches with different numbers of masked tokens", *same_metrics([3, 5, 2], seed=1)),
            ("a model in eval mode stays in eval mode", *same_metrics([4], seed=2, train_mode=False)),
        ],
        hidden_cases=[
            ("other sizes and seed", *same_metrics([1, 6], seed=5, hidden=48, layers=1)),
            ("four batches, untrained logits near uniform", *same_metrics([2, 2, 3, 1], seed=6)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_checkpoint(
    save_checkpoint: Callable, load_checkpoint: Callable, hidden: bool | None = None, first_failure: bool = False
) -> None:
    """Exercise 4.3: `save_checkpoint(path, model, optimizer, scheduler, step)` writes atomically, and
    `load_checkpoint(path, model, optimizer, scheduler) -> step` restores enough that training goes on
    exactly as if it had never stopped (dropout included: the RNG state is part of it)."""

    # the training steps around a save and a load are exercise 4.1's reference: that exercise comes earlier
    def run(model, opt, sched, steps, first):
        losses = []
        for step in range(first, first + steps):
            batches = masked_batches(model.config.vocab_size, [3, 2], seed=step)
            losses.append(training.train_step(model, batches, opt, sched)["loss"])
        return losses

    def resume_exactly(seed, before, after):
        def setup():
            return training_setup(seed, dropout=0.1, warmup=3)

        def observe():
            """Train `before` steps, save, train on (as the run that never stops would), load the checkpoint
            into a fresh model and train `after` steps from there: the losses and parameters of that resumed run."""
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "checkpoint.pt"
                (model, opt, sched), (fresh, fresh_opt, fresh_sched) = setup()
                torch.manual_seed(seed)
                run(model, opt, sched, before, 0)
                save_checkpoint(path, model, opt, sched, before)
                run(model, opt, sched, after, before)
                torch.manual_seed(12345)  # whatever happened in between
                step = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
                loaded = training_state(fresh, fresh_opt, fresh_sched)  # what the load put back, before training on
                resumed = run(fresh, fresh_opt, fresh_sched, after, before)
                return {"step": step, "loaded": loaded, "resumed": resumed, "parameters": parameters(fresh)}

        def judge(got):
            (model, opt, sched), _ = setup()
            torch.manual_seed(seed)
            run(model, opt, sched, before, 0)
            same_training_state(
                got["loaded"],
                training_state(model, opt, sched),
                f"right after load_checkpoint (saved at step {before})",
            )
            straight = run(model, opt, sched, after, before)
            if got["step"] != before:
                raise AssertionError(
                    f"load_checkpoint returned step {got['step']!r}, the checkpoint was saved at step {before}"
                )
            expect_same_losses(got["resumed"], straight, before, "weights, optimizer, scheduler, RNG?")
            same_parameters(got["parameters"], model, "after resuming and training on", atol=0)

        return observe, judge

    def interrupted_save():
        """Save at step 2, train a step, save again with a torch.save that dies half-way: the checkpoint's
        bytes after each save, and what load_checkpoint makes of what is left."""
        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):
            with open(f, "wb") if isinstance(f, (str, Path)) else contextlib.nullcontext(f) as out:
                out.write(b"half a checkpoint")
            raise KeyboardInterrupt("killed while saving")  # as if the process died here

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.pt"
            (model, opt, sched), (fresh, fresh_opt, fresh_sched) = training_setup(0)
            run(model, opt, sched, 2, 0)
            save_checkpoint(path, model, opt, sched, 2)
            saved = path.read_bytes() if path.is_file() else None
            run(model, opt, sched, 1, 2)
            torch.save = dying_save
            try:
                save_checkpoint(path, model, opt, sched, 3)
            except KeyboardInterrupt:  # the crash this case simulates, not an error in the student's code
                pass
            finally:
                torch.save = real_save
            seen = {"saved": saved, "after": path.read_bytes() if path.is_file() else None}
            # whether what is left can be loaded is what this case observes: a failed load is recorded (with
            # where in the student's code it failed), not raised
            try:
                seen["step"] = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
            except Exception as e:
                seen["load_error"] = [type(e).__name__, f"{type(e).__name__}: {e}{where_in_your_code(e)}"]
            return seen

    def atomic(got):
        if got["saved"] is not None and got["after"] != got["saved"]:
            raise AssertionError(
                "a save interrupted half-way changed checkpoint.pt; write to a temporary file, then rename it "
                "over the checkpoint"
            )
        if "load_error" in got:
            kind, detail = got["load_error"]
            if got["saved"] is not None and got["after"] == got["saved"]:  # the file is intact: the load is wrong
                raise AssertionError(f"load_checkpoint could not read the checkpoint saved at step 2: {detail}")
            raise AssertionError(
                f"a save interrupted half-way left checkpoint.pt unreadable ({kind}); "
                f"write to a temporary file, then rename it over the checkpoint"
            )
        if got["step"] != 2:
            raise AssertionError(
                f"after an interrupted save the checkpoint holds step {got['step']!r}, expected the previous one (2)"
            )

    run_cases(
        "4.3",
        [
            ("save at step 2, resume, 3 more steps with dropout: same losses", *resume_exactly(0, 2, 3)),
            ("save at step 5 (past warmup): same losses", *resume_exactly(1, 5, 2)),
            ("a save interrupted half-way leaves the previous checkpoint", interrupted_save, atomic),
        ],
        hidden_cases=[
            ("save at step 1, other seed", *resume_exactly(7, 1, 4)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


# --------------------------------------------------------------------------- exercise 4.4: the no-context baseline

SPECIAL = [0, 1, 2, 3, 4]  # <s> <pad> </s> <unk> <mask>, as the course tokenizer numbers them; <mask> is 4


def tiny_vocabulary(visible: list[int], targets: list[int]) -> dict:
    """Exercise 4.4's hand-made case: ids 0-2 are <s> <pad> </s>, 3 is <mask>, and the words a b c d (4-7) have
    u = 0.4 0.3 0.2 0.1; random replacement draws one of the four words (R = 4), keep 0.1, random 0.1."""
    return {
        "unigram": torch.tensor([0.0, 0.0, 0.0, 0.0, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64),
        "visible": torch.tensor(visible),
        "targets": torch.tensor(targets),
        "mask_token_id": 3,
        "random_ids": torch.tensor([4, 5, 6, 7]),
        "keep_prob": 0.1,
        "random_prob": 0.1,
    }


def zipf_vocabulary(
    vocab: int,
    n: int,
    seed: int,
    shows: str = "the rule",
    special=SPECIAL,
    mask_token_id: int = 4,
    random_ids=None,
    unseen: int = 0,
    keep_prob: float = 0.1,
    random_prob: float = 0.1,
) -> dict:
    """A unigram falling as 1 / rank over the ordinary ids in a shuffled order (0 on `special` and on `unseen`
    more ids, tokens the training text never had), and `n` predicted positions whose originals are drawn from
    it. They show: "<mask>" everywhere, "kept" tokens, "random" replacements (never the target), or what
    "the rule" gives (<mask>, a token drawn from `random_ids`, or the original, with 1 - keep - random,
    random and keep). `random_ids`: every ordinary id unless given."""
    g = torch.Generator().manual_seed(seed)
    ordinary = torch.tensor([i for i in range(vocab) if i not in set(special)])
    seen = ordinary[torch.randperm(len(ordinary), generator=g)][: len(ordinary) - unseen]
    u = torch.zeros(vocab, dtype=torch.float64)
    u[seen] = 1.0 / torch.arange(1, len(seen) + 1, dtype=torch.float64)
    u /= u.sum()
    random_ids = ordinary if random_ids is None else torch.as_tensor(random_ids)
    targets = torch.multinomial(u, n, replacement=True, generator=g)
    drawn = random_ids[torch.randint(len(random_ids), (n,), generator=g)]
    if shows == "<mask>":
        visible = torch.full_like(targets, mask_token_id)
    elif shows == "kept":
        visible = targets.clone()
    elif shows == "random":  # another of the random ids than the target (random_ids holds every ordinary id)
        offset = torch.randint(1, len(random_ids), (n,), generator=g)
        visible = random_ids[(torch.searchsorted(random_ids, targets) + offset) % len(random_ids)]
    else:
        draw = torch.rand(n, generator=g, dtype=torch.float64)
        masked, randomised = draw < 1 - keep_prob - random_prob, draw < 1 - keep_prob
        visible = torch.where(masked, mask_token_id, torch.where(randomised, drawn, targets))
    return {
        "unigram": u,
        "visible": visible,
        "targets": targets,
        "mask_token_id": mask_token_id,
        "random_ids": random_ids,
        "keep_prob": keep_prob,
        "random_prob": random_prob,
    }


def _position(inputs: dict, i: int) -> str:
    """What position i of a case shows, in words (for a failure message)."""
    shown, target = int(inputs["visible"][i]), int(inputs["targets"][i])
    drawable = shown in set(inputs["random_ids"].tolist())
    if shown == inputs["mask_token_id"]:
        return f"position {i} shows <mask> (target {target})"
    if not drawable and float(inputs["unigram"][shown]) == 0:
        return f"position {i} shows {shown}, a special token: never predicted, never drawn (target {target})"
    if not drawable:
        return f"position {i} shows {shown}, which random replacement never draws: it was kept (target {target})"
    how = "kept, or drawn at random" if shown == target else "a random replacement"
    return f"position {i} shows {shown}, {how} (target {target})"


def same_token_losses(got, inputs: dict, tolerance: float = 1e-6) -> None:
    """`got` must be what `course_lib.baselines.no_context_token_loss` gives on `inputs`: one loss per position,
    within `tolerance` (relative; absolute below 1 nat) where it is finite, and inf (or nan, 0 / 0) where the
    shown token has no explanation at all."""
    expected = baselines.no_context_token_loss(**inputs)
    n = expected.numel()
    if not torch.is_tensor(got):
        raise AssertionError(f"expected a tensor of {n} losses, got {type(got).__name__}")
    if got.shape != expected.shape:
        mean = ": not their mean" if got.numel() == 1 else ""
        raise AssertionError(f"shape {tuple(got.shape)}, expected ({n},): one loss per predicted position{mean}")
    if not got.is_floating_point():
        raise AssertionError(f"losses of dtype {got.dtype}: expected floating-point numbers (float64)")
    got, finite = got.double(), torch.isfinite(expected)
    unexplained = ~finite & torch.isfinite(got)  # inf expected: inf or nan (0 / 0) will do, a number will not
    if bool(unexplained.any()):
        i = int(unexplained.nonzero()[0])
        raise AssertionError(
            f"{_position(inputs, i)}: loss {float(got[i]):.4f}, expected inf: no original token can show it at a "
            "predicted position (P(shown) = 0), as random replacement draws only from random_ids"
        )
    error = torch.where(finite, (got - expected).abs() / expected.abs().clamp_min(1.0), 0.0)
    error = torch.where(finite & ~torch.isfinite(got), torch.inf, error)
    if bool((error > tolerance).any()):
        i = int((error > tolerance).nonzero()[0])
        hint = ""
        positive = finite & torch.isfinite(got) & (expected > 1e-6)
        ratio = got[positive] / expected[positive]
        if ratio.numel() and torch.allclose(ratio, torch.full_like(ratio, 1 / math.log(2)), rtol=1e-6):
            hint = " (all of them 1 / ln 2 times the expected ones: log base 2? cross-entropy here is in nats)"
        raise AssertionError(
            f"{_position(inputs, i)}: loss {float(got[i]):.6f}, expected {float(expected[i]):.6f}{hint}"
        )


def check_no_context_token_loss(
    no_context_token_loss: Callable, hidden: bool | None = None, first_failure: bool = False
) -> None:
    """Exercise 4.4: `no_context_token_loss(unigram, visible, targets, *, mask_token_id, random_ids, keep_prob,
    random_prob) -> [n] float64`, the no-context baseline's cross-entropy (nats) at each predicted position, as
    `course_lib.baselines.no_context_token_loss` gives it (the losses `NgramCounts.score` averages)."""

    def same_losses(build: Callable[[], dict]):
        def observe():
            inputs = build()
            tensors = [inputs.pop(key) for key in ("unigram", "visible", "targets")]
            return no_context_token_loss(*tensors, **inputs)

        def judge(got):
            same_token_losses(got, build())

        return observe, judge

    def tiny(visible, targets):
        return same_losses(lambda: tiny_vocabulary(visible, targets))

    def zipf(*args, **kwargs):
        return same_losses(lambda: zipf_vocabulary(*args, **kwargs))

    subset = [3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]  # ids 15-19 are ordinary, and never drawn
    run_cases(
        "4.4",
        [
            # <mask>, a: -ln 0.4; <mask>, d: -ln 0.1; b shown, b: -ln(0.3 (0.1 + 0.025) / (0.1 * 0.3 + 0.025));
            # c shown, a: -ln(0.4 * 0.025 / (0.1 * 0.2 + 0.025))
            ("four words, by hand: shown <mask> <mask> b c, originals a d b a", *tiny([3, 3, 5, 6], [4, 7, 5, 4])),
            ("every position shows <mask>", *zipf(30, 12, seed=1, shows="<mask>")),
            ("every position kept its token", *zipf(30, 12, seed=2, shows="kept")),
            ("every position shows a random replacement", *zipf(30, 12, seed=3, shows="random")),
            ("a shown <s> and </s> (special: never predicted, never drawn)", *tiny([0, 3, 2, 5], [4, 4, 6, 5])),
        ],
        hidden_cases=[
            (
                "<mask> is id 7, random replacement draws from a subset, keep 0.15 and random 0.05",
                *zipf(
                    20,
                    400,
                    seed=4,
                    special=[0, 1, 2, 7],
                    mask_token_id=7,
                    random_ids=subset,
                    keep_prob=0.15,
                    random_prob=0.05,
                ),
            ),
            (
                "5,000 ids, 300 never seen in training: the rule on 3,000 positions",
                *zipf(5000, 3000, seed=5, unseen=300),
            ),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
