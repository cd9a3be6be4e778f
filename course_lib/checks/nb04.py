"""Checkers of notebook 04 (the training loop): exercises 4.1 `train_step`, 4.2 `evaluate` and
4.3 checkpoints, compared with `course_lib.training`. The batch and model builders here serve notebook 03's
checkers (`padded_batch`) and notebook 07's (`training_setup`, `masked_batches`) too."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable

import torch

from course_lib import training
from course_lib.model import EncoderConfig, EncoderForMaskedLM

from .framework import expect_same_losses, run_cases


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


def same_parameters(a, b, what: str, atol: float = 1e-6) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        if not torch.allclose(x, y, rtol=1e-5, atol=atol):
            raise AssertionError(
                f"{what}: parameter {name} differs from the reference's "
                f"(largest difference {float((x - y).detach().abs().max()):.3g})"
            )


def check_train_step(train_step: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 4.1: `train_step(model, micro_batches, optimizer, scheduler, max_grad_norm) -> loss` makes
    the update `course_lib.training.train_step` makes (token-weighted accumulation, clipping, schedule)."""

    def same_update(sizes, max_grad_norm=1.0, steps=1, seed=0, lr=1e-2, dropout=0.0, **config):
        def case():
            (mine, opt, sched), (ref, ref_opt, ref_sched) = training_setup(seed, dropout=dropout, lr=lr, **config)
            for step in range(steps):
                batches = masked_batches(mine.config.vocab_size, sizes, seed=seed + 10 * step)
                torch.manual_seed(step)
                got = train_step(mine, batches, opt, sched, max_grad_norm=max_grad_norm)
                torch.manual_seed(step)
                expected = training.train_step(ref, batches, ref_opt, ref_sched, max_grad_norm=max_grad_norm)["loss"]
                if not isinstance(got, (float, int)) and not (torch.is_tensor(got) and got.numel() == 1):
                    raise AssertionError(f"train_step should return the loss as a number, got {type(got).__name__}")
                if abs(float(got) - expected) > 1e-5 * max(1.0, abs(expected)):
                    raise AssertionError(
                        f"step {step + 1}: returned loss {float(got):.6f}, expected {expected:.6f} "
                        f"(the mean over every masked token of the micro-batches)"
                    )
                same_parameters(mine, ref, f"after step {step + 1}")
                if sched.last_epoch != ref_sched.last_epoch:
                    raise AssertionError(
                        f"after step {step + 1} the scheduler has taken {sched.last_epoch} steps, "
                        f"expected {ref_sched.last_epoch}: step it once per update"
                    )

        return case

    def clip_changes_the_update():
        (mine, opt, sched), (ref, ref_opt, ref_sched) = training_setup(1, warmup=0, lr=1e-3)
        batches = masked_batches(mine.config.vocab_size, [3], seed=5)
        train_step(mine, batches, opt, sched, max_grad_norm=1e-4)
        training.train_step(ref, batches, ref_opt, ref_sched, max_grad_norm=1e-4)
        same_parameters(mine, ref, "with max_grad_norm=1e-4 (clip before the optimizer step)")
        (unclipped, opt2, sched2), _ = training_setup(1, warmup=0, lr=1e-3)
        training.train_step(unclipped, batches, opt2, sched2, max_grad_norm=0.0)
        before = training_setup(1, warmup=0, lr=1e-3)[0][0]
        with torch.no_grad():
            moved_clipped = sum(float((a - b).abs().sum()) for a, b in zip(mine.parameters(), before.parameters()))
            moved_free = sum(float((a - b).abs().sum()) for a, b in zip(unclipped.parameters(), before.parameters()))
        if not moved_clipped < moved_free:
            raise AssertionError("with a tiny max_grad_norm the update should be smaller than without clipping")

    run_cases(
        "4.1",
        [
            ("one micro-batch", same_update([3])),
            ("two micro-batches with different numbers of masked tokens", same_update([3, 4])),
            ("clipping", clip_changes_the_update),
            ("three updates in a row (warmup, zeroed gradients)", same_update([2, 3], steps=3, max_grad_norm=0.5)),
        ],
        hidden_cases=[
            ("three micro-batches, dropout, other seed", same_update([3, 2, 5], seed=3, dropout=0.1, steps=2)),
            ("masked-only head", same_update([4, 3], seed=4, masked_only=True, steps=2)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_evaluate(evaluate: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 4.2: `evaluate(model, batches) -> {"loss", "ppl", "acc"}` as `course_lib.training.evaluate`:
    token-weighted over every masked token, in eval mode, leaving the model's mode as it was."""

    def same_metrics(sizes, seed=0, dropout=0.1, train_mode=True, **config):
        def case():
            (model, _, _), _ = training_setup(seed, dropout=dropout, **config)
            batches = masked_batches(model.config.vocab_size, sizes, seed=seed)
            model.train(train_mode)
            expected = training.evaluate(model, batches)
            got = evaluate(model, batches)
            if model.training != train_mode:
                raise AssertionError(
                    f"the model was left in {'train' if model.training else 'eval'} mode; "
                    f"put it back in the mode it was in"
                )
            if not isinstance(got, dict) or not {"loss", "ppl", "acc"} <= set(got):
                raise AssertionError(f"evaluate should return a dict with loss, ppl and acc; got {got!r}")
            for key, tolerance in (("loss", 1e-5), ("ppl", 1e-4), ("acc", 1e-9)):
                value = float(got[key])
                if abs(value - expected[key]) > tolerance * max(1.0, abs(expected[key])):
                    raise AssertionError(f"{key}: got {value:.6f}, expected {expected[key]:.6f}")

        return case

    run_cases(
        "4.2",
        [
            ("one batch, model in train mode (dropout must be off)", same_metrics([3])),
            ("batches with different numbers of masked tokens", same_metrics([3, 5, 2], seed=1)),
            ("a model in eval mode stays in eval mode", same_metrics([4], seed=2, train_mode=False)),
        ],
        hidden_cases=[
            ("other sizes and seed", same_metrics([1, 6], seed=5, hidden=48, layers=1)),
            ("four batches, untrained logits near uniform", same_metrics([2, 2, 3, 1], seed=6)),
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

    def run(model, opt, sched, steps, first):
        losses = []
        for step in range(first, first + steps):
            batches = masked_batches(model.config.vocab_size, [3, 2], seed=step)
            losses.append(training.train_step(model, batches, opt, sched)["loss"])
        return losses

    def resume_exactly(seed, before, after):
        def case():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "checkpoint.pt"
                (model, opt, sched), (fresh, fresh_opt, fresh_sched) = training_setup(seed, dropout=0.1, warmup=3)
                torch.manual_seed(seed)
                run(model, opt, sched, before, 0)
                save_checkpoint(path, model, opt, sched, before)
                straight = run(model, opt, sched, after, before)
                torch.manual_seed(12345)  # whatever happened in between
                step = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
                if step != before:
                    raise AssertionError(
                        f"load_checkpoint returned step {step!r}, the checkpoint was saved at step {before}"
                    )
                resumed = run(fresh, fresh_opt, fresh_sched, after, before)
                expect_same_losses(resumed, straight, before, "weights, optimizer, scheduler, RNG?")
                same_parameters(fresh, model, "after resuming and training on", atol=0)

        return case

    def atomic():
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
            run(model, opt, sched, 1, 2)
            torch.save = dying_save
            try:
                save_checkpoint(path, model, opt, sched, 3)
            except KeyboardInterrupt:
                pass
            finally:
                torch.save = real_save
            try:
                step = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
            except Exception as e:
                raise AssertionError(
                    f"a save interrupted half-way left {path.name} unreadable ({type(e).__name__}); "
                    f"write to a temporary file, then rename it over the checkpoint"
                ) from None
            if step != 2:
                raise AssertionError(
                    f"after an interrupted save the checkpoint holds step {step!r}, expected the previous one (2)"
                )

    run_cases(
        "4.3",
        [
            ("save at step 2, resume, 3 more steps with dropout: same losses", resume_exactly(0, 2, 3)),
            ("save at step 5 (past warmup): same losses", resume_exactly(1, 5, 2)),
            ("a save interrupted half-way leaves the previous checkpoint", atomic),
        ],
        hidden_cases=[
            ("save at step 1, other seed", resume_exactly(7, 1, 4)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
