"""The budget recipe against Hugging Face defaults, at the same wall-clock training time.

    python benchmarks/budget.py --seconds 240 --out benchmarks/results/budget_cpu.json   # ~10 minutes, 2 CPU cores

Both runs train a model of the same size (vocab 8000, hidden 256, 4 layers, 4 heads, FFN 1024, blocks
or sentences of at most 128 tokens) on the shipped Brown sentences for `--seconds` of training time
each (evaluation not counted), and are evaluated at 4 points on the same held-out sentences, masked
once with a fixed seed (sentence by sentence, so neither run's input format is favoured):

* `hf-defaults`: `transformers.RobertaForMaskedLM` (post-norm, dropout 0.1, full MLM head, fp32),
  every sentence padded to 128, batch 32, and TrainingArguments' defaults: AdamW lr 5e-5, betas
  (0.9, 0.999), eps 1e-8, no weight decay, no warmup, linear decay;
* `fast`: the course's recipe: `EncoderForMaskedLM` with pre-norm, no dropout, MLM head on masked
  positions only, bf16 autocast, packed 128-token blocks, 32 x 4 accumulated = 128 blocks per update,
  peak lr 2e-3 (betas 0.9/0.98, eps 1e-6, weight decay 0.01), 6% warmup, linear decay.

Each run's schedule must end when its time does, so the number of updates is set from the speed of
its first steps (`max_steps = seconds / seconds per update`); training stops at the time limit or at
max_steps, whichever comes first. Runs go one after the other; keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
SEQ, BATCH = 128, 32

PRESETS = {
    "hf-defaults": dict(
        description="RobertaForMaskedLM, post-norm, dropout 0.1, lr 5e-5, padded to 128, batch 32, fp32",
        model=dict(pre_norm=False, dropout=0.1, attention_dropout=0.1, masked_only=False), roberta=True,
        data="padded", accum=1, precision="fp32",
        train=dict(lr=5e-5, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, warmup=0.0)),
    "fast": dict(
        description="course encoder, pre-norm, no dropout, masked-only head, bf16, packed, 128/update, lr 2e-3",
        model=dict(pre_norm=True, dropout=0.0, attention_dropout=0.0, masked_only=True), roberta=False,
        data="packed", accum=4, precision="bf16",
        train=dict(lr=2e-3, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=0.01, warmup=0.06)),
}


def prepare(vocab_size: int, eval_sentences: int):
    from course_lib import data, masking, tokenization, training

    train_texts = data.english_sentences("train")
    eval_texts = data.english_sentences("valid", limit=eval_sentences)
    tokenizer = tokenization.train_tokenizer(train_texts, vocab_size=vocab_size, max_length=SEQ)
    ids = tokenizer(train_texts, verbose=False)["input_ids"]
    packed = masking.pack_sequences(ids, SEQ)
    padded = [x[:SEQ - 1] + [x[-1]] if len(x) > SEQ else x for x in ids]  # truncated, keeping </s>
    eval_ids = tokenizer(eval_texts, truncation=True, max_length=SEQ, verbose=False)["input_ids"]
    eval_data = training.eval_batches(masking.fixed_eval_masks(eval_ids, tokenizer, seed=0), 64, tokenizer.pad_token_id)
    return tokenizer, packed, padded, eval_data


def run(name: str, seconds: float, tokenizer, packed, padded, eval_data, seed: int = 0) -> dict:
    import torch

    from course_lib import masking, model as M, training
    from course_lib.profiles import set_seed

    preset = PRESETS[name]
    set_seed(seed)
    config = M.EncoderConfig(vocab_size=len(tokenizer), max_length=SEQ, pad_token_id=tokenizer.pad_token_id,
                             **MODEL, **preset["model"])
    model = M.EncoderForMaskedLM(config)
    if preset["roberta"]:
        model = M.to_roberta(model)
    examples = packed if preset["data"] == "packed" else padded
    collator = masking.MLMCollator(tokenizer, seed=seed, pad_to_multiple_of=SEQ if preset["data"] == "padded" else None)
    stream = training.BatchStream(len(examples), BATCH, seed=seed)
    t = preset["train"]

    def micro_batches():
        return [collator([examples[int(i)] for i in next(stream)]) for _ in range(preset["accum"])]

    def make(max_steps):
        cfg = training.TrainConfig(max_steps=max_steps, batch_size=BATCH, lr=t["lr"], beta1=t["beta1"], beta2=t["beta2"],
                                   eps=t["eps"], weight_decay=t["weight_decay"],
                                   warmup_steps=int(t["warmup"] * max_steps), precision=preset["precision"])
        optimizer = training.make_optimizer(model, cfg)
        return cfg, optimizer, training.make_scheduler(optimizer, cfg)

    # the speed of this preset, from 3 throwaway updates on a copy of the starting weights
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg, optimizer, scheduler = make(1000)
    training.train_step(model, micro_batches(), optimizer, scheduler, precision=preset["precision"])
    began = time.perf_counter()
    for _ in range(3):
        training.train_step(model, micro_batches(), optimizer, scheduler, precision=preset["precision"])
    per_step = (time.perf_counter() - began) / 3
    model.load_state_dict(start_state)
    stream = training.BatchStream(len(examples), BATCH, seed=seed)
    max_steps = max(10, int(seconds / per_step))
    cfg, optimizer, scheduler = make(max_steps)

    curve = [{"seconds": 0.0, "step": 0, **_eval(training, model, eval_data)}]
    marks = [seconds * k / 4 for k in (1, 2, 3, 4)]
    trained, step, real_tokens = 0.0, 0, 0
    while step < max_steps and trained < seconds:
        began = time.perf_counter()
        micro = micro_batches()
        training.train_step(model, micro, optimizer, scheduler, max_grad_norm=1.0, precision=preset["precision"])
        trained += time.perf_counter() - began
        step += 1
        real_tokens += sum(int(b["attention_mask"].sum()) for b in micro)
        if trained >= marks[0] or step == max_steps:
            curve.append({"seconds": round(trained, 1), "step": step, **_eval(training, model, eval_data)})
            while marks and trained >= marks[0]:
                marks.pop(0)
            print(f"  {name}: {trained:6.1f} s, step {step}/{max_steps}, eval loss {curve[-1]['eval_loss']:.3f}", flush=True)
    if curve[-1]["step"] != step:
        curve.append({"seconds": round(trained, 1), "step": step, **_eval(training, model, eval_data)})
    last = curve[-1]
    return {"description": preset["description"], "seconds_per_update_estimate": round(per_step, 3),
            "max_steps": max_steps, "steps": step, "seconds": round(trained, 1), "real_tokens": real_tokens,
            "sequences_per_update": BATCH * preset["accum"], "eval_loss": last["eval_loss"],
            "eval_acc": last["eval_acc"], "curve": curve}


def _eval(training, model, eval_data) -> dict:
    result = training.evaluate(model, eval_data)
    return {"eval_loss": round(result["loss"], 4), "eval_acc": round(result["acc"], 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=240, help="training time per run (default 240)")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--eval-sentences", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    import torch
    import transformers

    began = time.perf_counter()
    tokenizer, packed, padded, eval_data = prepare(args.vocab, args.eval_sentences)
    runs = {}
    for name in PRESETS:
        print(f"{name}: {PRESETS[name]['description']}", flush=True)
        runs[name] = run(name, args.seconds, tokenizer, packed, padded, eval_data)
    fast, base = runs["fast"], runs["hf-defaults"]
    result = {
        "benchmark": "budget", "seconds_per_run": args.seconds, "model": MODEL, "vocab_size": len(tokenizer),
        "eval_masked_tokens": sum(int((b["labels"] != -100).sum()) for b in eval_data),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine()},
        "runs": runs,
        "fast_minus_hf_eval_loss": round(fast["eval_loss"] - base["eval_loss"], 4),
        "fast_lower_eval_loss": fast["eval_loss"] < base["eval_loss"],
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    for name, r in runs.items():
        print(f"{name:>12}: {r['steps']} updates x {r['sequences_per_update']} in {r['seconds']} s -> "
              f"eval loss {r['eval_loss']:.3f}, accuracy {r['eval_acc']:.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
