"""Notebook 04's main comparison over seeds: the model against the counts, what context it uses, fill-mask.

    python benchmarks/nb04_seeds.py --seeds 0 1 2 --out benchmarks/results/nb04_seeds_cpu.json
    python benchmarks/nb04_seeds.py --seeds 0 1 --batch 32 --rate 0.4 --lr 2e-3 --steps 2000 \
        --out benchmarks/results/nb04_seeds_b32_cpu.json      # another recipe, e.g. the one it replaced

Each seed trains notebook 04's main run exactly as the notebook does under the `cpu` profile (its data,
model, `TrainConfig` and collator; seed s sets the model's initialisation, the batch order and the masks;
seed 0 is the notebook's own run) and then measures, on the notebook's fixed 15% held-out masks:

* held-out loss and masked-token accuracy, next to the no-context baseline and the neighbour-count model;
* the loss with attention restricted to an exact reach of +-1, +-2, +-4 tokens (`model.reach`: the first layer
  sees +-k, the layers above only their own position) and unrestricted;
* the loss of the model and of the neighbour-count model split by the masked token's neighbours (both
  visible, one masked, both masked: `baselines.neighbour_status`);
* fill-mask top-1 and top-5 on the notebook's 200 held-out sentences, with standard errors, next to the
  neighbour-count model's.

`--batch`, `--rate`, `--lr` and `--steps` replace the profile's batch size, training masking rate, peak
learning rate and updates (for an equal-cost comparison of recipes: `benchmarks/recipe.py --costs-only`
gives the updates). Runs go `--jobs` at a time with `--threads` each (the notebook uses all cores; a run with
other threads differs from it by rounding only). Per-seed numbers, their mean, spread (max - min) and standard
deviation go to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REACHES = (1, 2, 4, None)  # None: unrestricted


def one_seed(seed: int, threads: int, changes: dict) -> dict:
    os.environ["COURSE_PROFILE"] = "cpu"
    import torch

    from course_lib import baselines, data, masking, model, tokenization, training
    from course_lib.profiles import get_profile, set_seed

    torch.set_num_threads(threads)
    P = get_profile()
    batch, rate, lr, steps = (changes.get(k) for k in ("batch", "rate", "lr", "steps"))
    batch, rate, lr, steps = batch or P.lm_batch_size, rate or P.mlm_probability, lr or P.lm_lr, steps or P.train_steps
    # notebook 04's data cells
    train_texts = data.english_sentences("train", limit=P.train_sentences)
    eval_texts = data.english_sentences("valid", limit=P.eval_sentences)
    tokenizer = tokenization.train_tokenizer(train_texts, vocab_size=P.vocab_size, max_length=P.max_length)
    blocks = masking.pack_sequences(tokenizer(train_texts, verbose=False)["input_ids"], P.max_length)
    eval_blocks = masking.pack_sequences(
        tokenizer(eval_texts, verbose=False)["input_ids"], P.max_length, drop_last=False
    )
    eval_data = training.eval_batches(
        masking.fixed_eval_masks(list(eval_blocks), tokenizer, seed=0), P.batch_size, tokenizer.pad_token_id
    )
    train_eval_data = training.eval_batches(  # a fixed-mask sample of the training blocks, as the notebook's
        masking.fixed_eval_masks(list(blocks[: len(eval_blocks)]), tokenizer, seed=0),
        P.batch_size,
        tokenizer.pad_token_id,
    )
    set_seed(seed)
    hidden, layers, heads, ffn = P.lm_size
    net = model.EncoderForMaskedLM(
        model.EncoderConfig(
            vocab_size=len(tokenizer),
            max_length=P.max_length,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            intermediate_size=ffn,
            position=P.position,
            init_std=P.init_std,
            dropout=0.0,
            attention_dropout=0.0,
            masked_only=True,
        )
    )
    config = training.TrainConfig(
        max_steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=max(1, steps // 10),  # 10% of the updates, as the profile's (and recipe.py's)
        eval_every=max(1, steps // 10),
        save_every=steps,
        keep_last=1,
        log_every=1,
        seed=seed,
    )
    collator = masking.MLMCollator(tokenizer, mlm_probability=rate, seed=seed)
    with tempfile.TemporaryDirectory() as work:
        folder = training.new_experiment(work, "main", config.to_dict())
        started = time.perf_counter()
        final = training.train(
            net,
            blocks,
            eval_data,
            config,
            collator=collator,
            folder=folder,
            progress=False,
            train_eval_data=train_eval_data,
        )
        seconds = time.perf_counter() - started
        curve = [
            {k: r[k] for k in ("step", "eval_loss", "train_eval_loss") if k in r}
            for r in training.read_metrics(folder)
            if "eval_loss" in r
        ]
        counts = baselines.NgramCounts.fit(blocks, tokenizer)
        base = counts.score(eval_data)
        reach = {}
        for k in REACHES:
            window = None if k is None else model.reach(net, k)
            with model.attention_window(net, window):
                reach["all" if k is None else f"+-{k}"] = training.evaluate(net, eval_data)["loss"]
        status = baselines.neighbour_status(eval_data, tokenizer.mask_token_id)
        split = baselines.loss_by_neighbours(
            {"model": baselines.model_token_losses(net, eval_data), **counts.token_losses(eval_data)}, status
        )
        hf_folder = model.export_pretrained(net, Path(work) / "hf", tokenizer)
        fill_mask = training.fill_mask_pipeline(hf_folder)
        examples = training.fill_mask_examples(eval_texts, fill_mask.tokenizer, 200, seed=0)
        scores = training.fill_mask_scores(fill_mask, examples)
        neighbour_fill = counts.fill_mask(tokenizer, examples)
    return {
        "seed": seed,
        "recipe": {"batch_size": batch, "mlm_probability": rate, "lr": lr, "warmup_steps": max(1, steps // 10)},
        "seconds": round(seconds, 1),
        "threads": threads,
        "steps": steps,
        "eval_loss": final["loss"],
        "eval_acc": final["acc"],
        "curve": curve,
        "no_context_loss": base["no_context_loss"],
        "no_context_acc": base["no_context_accuracy"],
        "neighbour_loss": base["neighbour_loss"],
        "neighbour_acc": base["neighbour_accuracy"],
        "tokens": base["tokens"],
        "reach_loss": reach,
        "by_neighbours": split,
        "fill_mask": {
            "n": len(examples),
            "top1": scores["top1"],
            "top5": scores["top5"],
            "distinct": scores["distinct_answers"],
            "neighbour_top1": neighbour_fill["top1"],
            "neighbour_top5": neighbour_fill["top5"],
        },
    }


def _stats(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "spread": max(values) - min(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--batch", type=int, help="blocks per update (default: the profile's lm_batch_size)")
    parser.add_argument("--rate", type=float, help="training masking rate (default: mlm_probability)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: lm_lr)")
    parser.add_argument("--steps", type=int, help="updates (default: train_steps)")
    parser.add_argument("--merge", type=Path, nargs="+", help="train nothing: combine the runs of these result files")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    began = time.perf_counter()
    if args.merge:  # runs made apart (two processes side by side), one summary
        runs = sorted((r for path in args.merge for r in json.loads(path.read_text())["runs"]), key=lambda r: r["seed"])
        if len({json.dumps(r["recipe"], sort_keys=True) for r in runs}) != 1:
            raise SystemExit(f"error: {', '.join(map(str, args.merge))} hold runs of different recipes")
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            changes = {"batch": args.batch, "rate": args.rate, "lr": args.lr, "steps": args.steps}
            runs = list(pool.map(one_seed, args.seeds, [threads] * len(args.seeds), [changes] * len(args.seeds)))
    for r in runs:
        print(
            f"seed {r['seed']}: held-out {r['eval_loss']:.3f} ({r['eval_acc']:.1%}); neighbour counts "
            f"{r['neighbour_loss']:.3f}; reach "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["reach_loss"].items())
            + f"; fill-mask top-1 {r['fill_mask']['top1']:.1%} (counts {r['fill_mask']['neighbour_top1']:.1%})"
        )
    n = runs[0]["fill_mask"]["n"]
    summary = {
        "eval_loss": _stats([r["eval_loss"] for r in runs]),
        "eval_acc": _stats([r["eval_acc"] for r in runs]),
        "model_minus_neighbour": _stats([r["eval_loss"] - r["neighbour_loss"] for r in runs]),
        "reach_loss": {k: _stats([r["reach_loss"][k] for r in runs]) for k in runs[0]["reach_loss"]},
        "fill_mask_top1": _stats([r["fill_mask"]["top1"] for r in runs]),
        "fill_mask_top5": _stats([r["fill_mask"]["top5"] for r in runs]),
    }
    for key in ("top1", "top5"):  # a binomial standard error on the 200 sentences, per run
        p = summary[f"fill_mask_{key}"]["mean"]
        summary[f"fill_mask_{key}"]["standard_error_one_run"] = math.sqrt(p * (1 - p) / n)
    result = {
        "benchmark": "notebook 04 main comparison over seeds (cpu profile)",
        "seeds": [r["seed"] for r in runs],
        "recipe": runs[0]["recipe"],
        "steps": runs[0]["steps"],
        "runs": runs,
        "summary": summary,
        "no_context_loss": runs[0]["no_context_loss"],
        "neighbour_loss": runs[0]["neighbour_loss"],
        "neighbour_fill_mask": {
            "top1": runs[0]["fill_mask"]["neighbour_top1"],
            "top5": runs[0]["fill_mask"]["neighbour_top5"],
        },
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "threads_per_run": threads,
            "jobs": args.jobs,
        },
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    s = summary["eval_loss"]
    print(
        f"held-out loss over {len(runs)} seeds: {s['mean']:.3f} (spread {s['spread']:.3f}); neighbour counts "
        f"{result['neighbour_loss']:.3f}; model - counts {summary['model_minus_neighbour']['mean']:+.3f} "
        f"(spread {summary['model_minus_neighbour']['spread']:.3f})"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
