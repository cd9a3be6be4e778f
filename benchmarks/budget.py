"""Time to quality: how long the Hugging Face defaults and the course recipe take to learn to use context.

    python benchmarks/budget.py --seconds 480 --out benchmarks/results/budget_cpu.json   # ~15 minutes, 2 CPU cores

"Learned to use context" has a number: the held-out loss must fall 0.5 nats below the **no-context
baseline** (unigram at <mask>, copy of a visible token; `course_lib.baselines`) on the same fixed masks.
Every run trains a model of the same size (vocab 8000, hidden 256, 4 layers, 4 heads, FFN 1024, blocks or
sentences of at most 128 tokens) on the shipped Brown sentences, for at most `--seconds` of training time
each (evaluation not counted), evaluated every `--eval-every` seconds on the same held-out sentences, masked
once at 15% with a fixed seed (sentence by sentence, so neither run's input format is favoured). A run
stops when it reaches the target (`--full` trains on to the end of the budget):

* `hf-defaults`: `transformers.RobertaForMaskedLM` (learned positions, post-norm, dropout 0.1, full MLM
  head, fp32), every sentence padded to 128, batch 32, 15% masking, and TrainingArguments' defaults:
  AdamW lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay, no warmup, linear decay;
* `hf-pretraining`: the same `RobertaForMaskedLM` with RoBERTa's *pretraining* settings instead of the
  Trainer's fine-tuning defaults (Liu et al. 2019: packed full-sentence blocks, peak lr 6e-4 after warmup,
  betas 0.9/0.98, eps 1e-6, weight decay 0.01, 15% masking, dropout 0.1): it differs from `hf-defaults` in
  the recipe only and from `course` in the code (positions, head, dropout, masking rate, lr), so the
  three runs separate what the recipe buys from what the course's model buys;
* `course`: the course's recipe (notebook 04): `EncoderForMaskedLM` with rotary positions, post-norm (so it
  exports to RoFormerForMaskedLM), no dropout, MLM head on masked positions only, 40% masking, packed
  128-token blocks, batch 32, peak lr 1e-3 (betas 0.9/0.98, eps 1e-6, weight decay 0.01), warmup 100
  updates, linear decay; fp32, or `--precision bf16` on a CPU or GPU with bf16 units (on a CPU without them,
  such as the one the stored result comes from, bf16 autocast was measured 12.9x slower than fp32 for notebook
  04's model).

Each run's schedule must end when its time does, so the number of updates is set from the speed of
its first steps (`max_steps = seconds / seconds per update`). Runs go one after the other; keep the
machine otherwise idle. The result reports, per run, the seconds to the target (or null: not reached
within the budget) and the ratio hf-defaults / course.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

MODEL = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
SEQ, BATCH = 128, 32
MARGIN = 0.5  # nats below the no-context baseline: the target

PRESETS = {
    "hf-defaults": dict(
        description="RobertaForMaskedLM, learned positions, dropout 0.1, lr 5e-5, no warmup, padded to 128, "
        "15% masking, fp32",
        model=dict(position="learned", dropout=0.1, attention_dropout=0.1, masked_only=False),
        roberta=True,
        data="padded",
        mlm=0.15,
        precision="fp32",
        train=dict(lr=5e-5, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, warmup=0),
    ),
    "hf-pretraining": dict(
        description="RobertaForMaskedLM, learned positions, dropout 0.1, RoBERTa's pretraining settings: packed "
        "blocks, lr 6e-4 with warmup, betas 0.9/0.98, weight decay 0.01, 15% masking, fp32",
        model=dict(position="learned", dropout=0.1, attention_dropout=0.1, masked_only=False),
        roberta=True,
        data="packed",
        mlm=0.15,
        precision="fp32",
        train=dict(lr=6e-4, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=0.01, warmup=100),
    ),
    "course": dict(
        description="course encoder, rotary positions, no dropout, masked-only head, packed, 40% masking, lr 1e-3",
        model=dict(position="rotary", dropout=0.0, attention_dropout=0.0, masked_only=True),
        roberta=False,
        data="packed",
        mlm=0.4,
        precision="fp32",
        train=dict(lr=1e-3, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=0.01, warmup=100),
    ),
}


def prepare(vocab_size: int, eval_sentences: int):
    from course_lib import data, masking, tokenization, training
    from course_lib.baselines import NgramCounts

    train_texts = data.english_sentences("train")
    eval_texts = data.english_sentences("valid", limit=eval_sentences)
    tokenizer = tokenization.train_tokenizer(train_texts, vocab_size=vocab_size, max_length=SEQ)
    ids = tokenizer(train_texts, verbose=False)["input_ids"]
    packed = masking.pack_sequences(ids, SEQ)
    padded = [x[: SEQ - 1] + [x[-1]] if len(x) > SEQ else x for x in ids]  # truncated, keeping </s>
    eval_ids = tokenizer(eval_texts, truncation=True, max_length=SEQ, verbose=False)["input_ids"]
    eval_data = training.eval_batches(masking.fixed_eval_masks(eval_ids, tokenizer, seed=0), 64, tokenizer.pad_token_id)
    baselines = NgramCounts.fit(packed, tokenizer).score(eval_data)
    return tokenizer, packed, padded, eval_data, baselines


def run(
    name: str,
    seconds: float,
    target: float,
    eval_every: float,
    tokenizer,
    packed,
    padded,
    eval_data,
    precision: str | None = None,
    full: bool = False,
    seed: int = 0,
) -> dict:
    from course_lib import masking, training
    from course_lib import model as M
    from course_lib.profiles import set_seed

    preset = PRESETS[name]
    precision = precision if precision and name == "course" else preset["precision"]
    set_seed(seed)
    config = M.EncoderConfig(
        vocab_size=len(tokenizer), max_length=SEQ, pad_token_id=tokenizer.pad_token_id, **MODEL, **preset["model"]
    )
    model = M.EncoderForMaskedLM(config)
    if preset["roberta"]:
        model = M.to_roberta(model)
    examples = packed if preset["data"] == "packed" else padded
    collator = masking.MLMCollator(
        tokenizer,
        mlm_probability=preset["mlm"],
        seed=seed,
        pad_to_multiple_of=SEQ if preset["data"] == "padded" else None,
    )
    stream = training.BatchStream(len(examples), BATCH, seed=seed)
    t = preset["train"]

    def batch():
        return [collator([examples[int(i)] for i in next(stream)])]

    def make(max_steps):
        cfg = training.TrainConfig(
            max_steps=max_steps,
            batch_size=BATCH,
            lr=t["lr"],
            beta1=t["beta1"],
            beta2=t["beta2"],
            eps=t["eps"],
            weight_decay=t["weight_decay"],
            warmup_steps=min(t["warmup"], max_steps // 10),
            precision=precision,
        )
        optimizer = training.make_optimizer(model, cfg)
        return cfg, optimizer, training.make_scheduler(optimizer, cfg)

    # the speed of this preset, from 3 throwaway updates on a copy of the starting weights
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg, optimizer, scheduler = make(1000)
    training.train_step(model, batch(), optimizer, scheduler, precision=precision)
    began = time.perf_counter()
    for _ in range(3):
        training.train_step(model, batch(), optimizer, scheduler, precision=precision)
    per_step = (time.perf_counter() - began) / 3
    model.load_state_dict(start_state)
    stream = training.BatchStream(len(examples), BATCH, seed=seed)
    max_steps = max(10, int(seconds / per_step))
    cfg, optimizer, scheduler = make(max_steps)

    curve = [{"seconds": 0.0, "step": 0, **_eval(training, model, eval_data, precision)}]
    reached = None
    next_eval, trained, step, real_tokens = eval_every, 0.0, 0, 0
    while step < max_steps and trained < seconds:
        began = time.perf_counter()
        micro = batch()
        training.train_step(model, micro, optimizer, scheduler, max_grad_norm=1.0, precision=precision)
        trained += time.perf_counter() - began
        step += 1
        real_tokens += sum(int(b["attention_mask"].sum()) for b in micro)
        if trained >= next_eval or step == max_steps or trained >= seconds:
            curve.append({"seconds": round(trained, 1), "step": step, **_eval(training, model, eval_data, precision)})
            next_eval += eval_every
            print(
                f"  {name}: {trained:6.1f} s, step {step}/{max_steps}, eval loss {curve[-1]['eval_loss']:.3f} "
                f"(target {target:.3f})",
                flush=True,
            )
            if reached is None and curve[-1]["eval_loss"] <= target:
                reached = curve[-1]
                if not full:
                    break
    last = curve[-1]
    return {
        "description": preset["description"],
        "precision": precision,
        "seconds_per_update_estimate": round(per_step, 3),
        "max_steps": max_steps,
        "steps": step,
        "seconds": round(trained, 1),
        "real_tokens": real_tokens,
        "seconds_to_target": reached["seconds"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "eval_loss": last["eval_loss"],
        "eval_acc": last["eval_acc"],
        "curve": curve,
    }


def _eval(training, model, eval_data, precision) -> dict:
    result = training.evaluate(model, eval_data, precision)
    return {"eval_loss": round(result["loss"], 4), "eval_acc": round(result["acc"], 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=480, help="training-time budget per run (default 480)")
    parser.add_argument("--eval-every", type=float, default=20, help="evaluate every this many seconds of training")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--eval-sentences", type=int, default=1000)
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="the course run's precision (default fp32)")
    parser.add_argument("--full", action="store_true", help="train each run to the end of its budget")
    parser.add_argument("--only", nargs="+", choices=sorted(PRESETS), help="run these presets only")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    import torch
    import transformers

    began = time.perf_counter()
    tokenizer, packed, padded, eval_data, baselines = prepare(args.vocab, args.eval_sentences)
    target = baselines["no_context_loss"] - MARGIN
    print(
        f"no-context baseline {baselines['no_context_loss']:.3f}, "
        f"neighbour-count model {baselines['neighbour_loss']:.3f}; "
        f"target: held-out loss <= {target:.3f}",
        flush=True,
    )
    runs = {}
    for name in args.only or PRESETS:
        print(f"{name}: {PRESETS[name]['description']}", flush=True)
        runs[name] = run(
            name,
            args.seconds,
            target,
            args.eval_every,
            tokenizer,
            packed,
            padded,
            eval_data,
            precision=args.precision,
            full=args.full,
        )
    course, base = runs.get("course", {}), runs.get("hf-defaults", {})
    ratio = None
    if course.get("seconds_to_target") and base.get("seconds_to_target"):
        ratio = round(base["seconds_to_target"] / course["seconds_to_target"], 2)
    result = {
        "benchmark": "budget (time to quality)",
        "seconds_per_run": args.seconds,
        "model": MODEL,
        "vocab_size": len(tokenizer),
        "eval_masked_tokens": baselines["tokens"],
        "no_context_loss": round(baselines["no_context_loss"], 4),
        "no_context_accuracy": round(baselines["no_context_accuracy"], 4),
        "neighbour_loss": round(baselines["neighbour_loss"], 4),
        "neighbour_accuracy": round(baselines["neighbour_accuracy"], 4),
        "target_loss": round(target, 4),
        "target": f"held-out loss {MARGIN} nats below the no-context baseline",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
        "runs": runs,
        "hf_over_course_time_to_target": ratio,
        "reached": {name: r["seconds_to_target"] is not None for name, r in runs.items()},
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    for name, r in runs.items():
        to = (
            f"{r['seconds_to_target']} s ({r['steps_to_target']} updates)"
            if r["seconds_to_target"]
            else f"not reached in {r['seconds']} s ({r['steps']} updates)"
        )
        print(f"{name:>12}: target {to}; last eval loss {r['eval_loss']:.3f}, accuracy {r['eval_acc']:.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
