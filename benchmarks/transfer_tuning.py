"""Notebook 06's learning rates, chosen on held-out lines of the *training* text (never the notebook's eval lines).

    python benchmarks/transfer_tuning.py --out benchmarks/results/transfer_tuning_cpu.json
    # ~15 minutes on 2 CPU cores

Notebook 06 trains three kinds of arm on Portuguese for the same number of updates, batches and masks
(`transfer.train_arm`): the new word embeddings alone on a frozen body ("embeddings"), every weight with the
vocabulary at one peak rate and the body at another ("full", per-group rates), and a model of the same shape
with nothing from the source ("scratch"). Each gets its rate here, by the held-out loss after the notebook's
number of updates, on a split of notebook 06's training lines: blocks of 50 consecutive lines (about a help
page or two), every 20th block held out (`--every`), so no held-out line has its neighbours in training.

The order: the embedding-only rate first (grid `--embedding-lrs`); full fine-tuning then keeps the vocabulary
at that rate and tries body rates (`--body-lrs`); from scratch tries `--scratch-lrs`. One seed (0) per
setting: the gaps that decide are compared with the seed-to-seed spread that the notebook measures. The body
of "embeddings" and "full" is brown-small with an English head made by notebook 06's procedure
(`transfer.english_head`); the tokenizer is trained on the tuning split's training lines only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def split_blocks(lines: list[str], block: int = 50, every: int = 20) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines): consecutive blocks of `block` lines, every `every`-th block held out."""
    fit, held = [], []
    for start in range(0, len(lines), block):
        (held if (start // block) % every == every - 1 else fit).extend(lines[start : start + block])
    return fit, held


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--embedding-lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--body-lrs", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4, 1e-3])
    parser.add_argument("--scratch-lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3, 8e-3])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from course_lib import data, transfer
    from course_lib.baselines import NgramCounts
    from course_lib.profiles import get_profile

    P = get_profile(args.profile)
    began = time.perf_counter()
    source, source_tokenizer, _ = transfer.load_source("brown-small")
    english_train = transfer.encode(data.english_sentences("train", limit=P.transfer_train_sentences), source_tokenizer)
    english_eval = transfer.masked_eval_set(
        data.english_sentences("valid", limit=P.transfer_eval_sentences), source_tokenizer
    )
    body, _ = transfer.english_head(
        source, source_tokenizer, english_train, english_eval, P.transfer_head_steps, P.batch_size, seed=0
    )
    lines = data.load_multilingual(split="train", langs=["por"])["por"]
    if P.transfer_train_sentences:
        lines = lines[: P.transfer_train_sentences]
    fit, held = split_blocks(lines, every=args.every)
    tokenizer = transfer.train_target_tokenizer(fit, source_tokenizer, vocab_size=P.transfer_vocab_size)
    train_examples = transfer.encode(fit, tokenizer)
    dev = transfer.masked_eval_set(held[: P.transfer_eval_sentences], tokenizer)
    base = NgramCounts.fit(train_examples, tokenizer).score(dev)
    print(
        f"{len(fit):,} training lines, {len(held[: P.transfer_eval_sentences]):,} held out ({base['tokens']:,} masked "
        f"tokens): no context {base['no_context_loss']:.3f}, neighbour counts {base['neighbour_loss']:.3f}"
    )

    runs = []

    def run(arm, lr, body_lr=None):
        t0 = time.perf_counter()
        _, history = transfer.train_arm(
            arm, body, source_tokenizer, tokenizer, train_examples, dev, P.transfer_steps, lr, body_lr, P.batch_size,
            seed=0, eval_every=max(1, P.transfer_steps // 4),
        )  # fmt: skip
        row = {"arm": arm, "lr": lr, "body_lr": body_lr, "loss": history[-1]["loss"], "acc": history[-1]["acc"],
               "curve": [(r["step"], r["loss"]) for r in history], "seconds": time.perf_counter() - t0}  # fmt: skip
        runs.append(row)
        print(
            f"{arm:>10} lr {lr:g}" + (f" body {body_lr:g}" if body_lr else "") + f": held-out {row['loss']:.3f} "
            f"({row['acc']:.1%}), {row['seconds']:.0f} s",
            flush=True,
        )
        return row

    best = {}
    best["embeddings"] = min((run("embeddings", lr) for lr in args.embedding_lrs), key=lambda r: r["loss"])
    lr = best["embeddings"]["lr"]
    best["full"] = min((run("full", lr, body_lr) for body_lr in args.body_lrs), key=lambda r: r["loss"])
    best["scratch"] = min((run("scratch", lr) for lr in args.scratch_lrs), key=lambda r: r["loss"])
    chosen = {arm: {"lr": row["lr"], "body_lr": row["body_lr"], "loss": row["loss"]} for arm, row in best.items()}
    print("chosen:", json.dumps(chosen))
    result = {
        "profile": P.name,
        "steps": P.transfer_steps,
        "batch_size": P.batch_size,
        "training_lines": len(fit),
        "held_out_lines": len(held[: P.transfer_eval_sentences]),
        "baselines": base,
        "runs": runs,
        "chosen": chosen,
        "seconds": time.perf_counter() - began,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/transfer_tuning.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
