"""Training speed: the course's pipeline against the Hugging Face baselines, side by side in one run.

    python benchmarks/speed.py --out speed.json          # about 3 minutes on 2 CPU cores

Every row trains the same model size (vocab 8000, hidden 256, 4 layers, 4 heads, FFN 1024, sequences
of 128, batch 32, AdamW) on the shipped English sentences (Brown corpus) and times whole steps:
collate a batch, forward, backward, optimizer step.

* baseline P, the seeds' way: tokenizer pads every sentence to 128, `DataCollatorForLanguageModeling`,
  `RobertaForMaskedLM` (sdpa attention);
* baseline G, Hugging Face's from-scratch notebook way: texts concatenated and chunked into 128-token
  blocks (`group_texts`), the same collator and model;
* the course way: `masking.pack_sequences` + `masking.MLMCollator` + `model.EncoderForMaskedLM` with
  masked-only prediction; in fp32, and in bf16 autocast as a separate row.

The figure of merit is real (non-padding) tokens per second. The rows are timed in one process with
their steps interleaved, round by round, so that a busy moment of the machine slows every row alike;
each row's peak memory (max RSS) comes from a fresh process of its own. Separately: the encoders alone
(course vs `RobertaForMaskedLM`, same batches, config and precision, interleaved) and the collators
alone. An extra row shows the course's budget recipe (dropout 0, as notebook 04 trains); the ratios
use the row with the baselines' dropout of 0.1. Compare ratios taken from one run, not numbers from
different runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ, BATCH = 128, 32
MODEL = dict(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_length=SEQ)


# --------------------------------------------------------------------------- the pipelines
def _batches(pipeline: str, tokenizer, sentences: list[str], seed: int):
    """An endless iterator of (batch dict, real tokens) in the pipeline's own way."""
    import random

    import torch
    from transformers import DataCollatorForLanguageModeling

    from course_lib import masking

    rng = random.Random(seed)
    if pipeline == "pad":  # every sentence padded to 128 by the tokenizer
        enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=SEQ)
        examples = [{"input_ids": ids} for ids in enc["input_ids"]]
    elif pipeline == "group":  # Hugging Face's group_texts: concatenate, cut into 128-token blocks
        enc = tokenizer(sentences)["input_ids"]
        stream = [t for ids in enc for t in ids]
        examples = [{"input_ids": stream[i : i + SEQ]} for i in range(0, len(stream) // SEQ * SEQ, SEQ)]
    else:  # the course: packed blocks as one tensor
        blocks = masking.pack_sequences(tokenizer(sentences)["input_ids"], SEQ)
    if pipeline in ("pad", "group"):
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
        while True:
            batch = collator(rng.sample(examples, BATCH))
            yield batch, int((batch["input_ids"] != tokenizer.pad_token_id).sum())
    collator = masking.MLMCollator(tokenizer, mlm_probability=0.15, seed=seed)
    while True:
        rows = torch.tensor(rng.sample(range(len(blocks)), BATCH))
        batch = collator(blocks[rows])
        yield batch, int(batch["attention_mask"].sum())


def _model(kind: str, dropout: float):
    import torch

    from course_lib import model

    torch.manual_seed(0)
    config = model.EncoderConfig(**MODEL, dropout=dropout, attention_dropout=dropout, masked_only=(kind == "course"))
    if kind == "course":
        return model.EncoderForMaskedLM(config)
    from transformers import RobertaForMaskedLM

    net = RobertaForMaskedLM(model.roberta_config(config))
    assert net.config._attn_implementation == "sdpa", net.config._attn_implementation  # the fast baseline
    return net


def _loss(net, batch):
    if hasattr(net, "roberta"):
        return net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    return net(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss


def _trainer(row: dict, tokenizer, sentences: list[str]):
    """One row's training step as a function: collate, forward, backward, AdamW; returns real tokens."""
    import torch

    batches = _batches(row["pipeline"], tokenizer, sentences, seed=0)
    net = _model(row["model"], row["dropout"]).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> int:
        batch, n_real = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=row["bf16"]):
            loss = _loss(net, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return n_real

    return step


def _setup(tokenizer_dir: str, n_sentences: int, threads: int):
    import torch
    from transformers import AutoTokenizer

    from course_lib import data

    torch.set_num_threads(threads)
    return AutoTokenizer.from_pretrained(tokenizer_dir), data.english_sentences("train", limit=n_sentences)


def time_rows(rows: list[dict], tokenizer_dir: str, n_sentences: int, steps: int, warmup: int, threads: int) -> list:
    """All rows in one process, their steps interleaved round by round (in a shuffled order), so that
    the machine's ups and downs hit every row alike: the ratios are what this benchmark is for."""
    import random

    tokenizer, sentences = _setup(tokenizer_dir, n_sentences, threads)
    trainers = [_trainer(row, tokenizer, sentences) for row in rows]
    times, real = [[] for _ in rows], [[] for _ in rows]
    order = list(range(len(rows)))
    for round_ in range(warmup + steps):
        random.Random(round_).shuffle(order)
        for i in order:
            start = time.perf_counter()
            n_real = trainers[i]()
            if round_ >= warmup:
                times[i].append(time.perf_counter() - start)
                real[i].append(n_real)
    return [
        {
            "step_s": statistics.median(t),
            "real_tokens_per_step": statistics.mean(r),
            "real_tokens_per_s": statistics.mean(r) / statistics.median(t),
        }
        for t, r in zip(times, real)
    ]


def peak_memory(row: dict, tokenizer_dir: str, n_sentences: int, steps: int, threads: int) -> float:
    """Max RSS (MB) of a fresh process that runs a few steps of one row."""
    tokenizer, sentences = _setup(tokenizer_dir, n_sentences, threads)
    step = _trainer(row, tokenizer, sentences)
    for _ in range(steps):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoder_step(tokenizer_dir: str, n_sentences: int, steps: int, warmup: int, threads: int, dropout: float) -> dict:
    """The encoders alone: the same packed, masked batches through RobertaForMaskedLM (sdpa) and the
    course encoder (masked-only), same config, fp32; steps interleaved so that machine noise hits both."""
    import torch

    tokenizer, sentences = _setup(tokenizer_dir, n_sentences, threads)
    batches = _batches("course", tokenizer, sentences, seed=1)
    nets = {kind: _model(kind, dropout).train() for kind in ("roberta", "course")}
    optimizers = {kind: torch.optim.AdamW(net.parameters(), lr=1e-4) for kind, net in nets.items()}
    times = {kind: [] for kind in nets}
    for step in range(warmup + steps):
        batch, _ = next(batches)
        for kind, net in nets.items():
            start = time.perf_counter()
            _loss(net, batch).backward()
            optimizers[kind].step()
            optimizers[kind].zero_grad(set_to_none=True)
            if step >= warmup:
                times[kind].append(time.perf_counter() - start)
    return {kind: statistics.median(t) for kind, t in times.items()}


def collators(tokenizer_dir: str, n_sentences: int, repeats: int, threads: int) -> dict:
    """Examples per second of each collator on 64 x 128 batches, each on its pipeline's input."""
    from transformers import DataCollatorForLanguageModeling

    from course_lib import masking

    tokenizer, sentences = _setup(tokenizer_dir, n_sentences, threads)
    enc = tokenizer(sentences[:4000], padding="max_length", truncation=True, max_length=SEQ)["input_ids"]
    dicts = [{"input_ids": ids} for ids in enc[:64]]
    blocks = masking.pack_sequences(tokenizer(sentences[:4000])["input_ids"], SEQ)[:64]
    hf = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    ours = masking.MLMCollator(tokenizer, mlm_probability=0.15, seed=0)

    def rate(fn):
        fn()
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            samples.append(64 * repeats / (time.perf_counter() - start))
        return statistics.median(samples)

    return {
        "hf_list_of_dicts": rate(lambda: hf(dicts)),
        "course_list_of_dicts": rate(lambda: ours(dicts)),
        "course_packed_tensor": rate(lambda: ours(blocks)),
    }


NB04_MODEL = dict(vocab_size=8000, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512, max_length=SEQ)


def head_step(tokenizer_dir: str, n_sentences: int, steps: int, warmup: int, threads: int) -> dict:
    """The course step with the plain head (full [n_masked, vocab] logits, then cross-entropy) against the
    chunked head (`model.chunked_mlm_loss`, `loss_chunk` rows at a time), the same weights and batches, fp32,
    no dropout, steps interleaved; for notebook 04's model (40% masking) and this benchmark's (15%)."""
    import torch

    from course_lib import masking, model

    tokenizer, sentences = _setup(tokenizer_dir, n_sentences, threads)
    blocks = masking.pack_sequences(tokenizer(sentences)["input_ids"], SEQ)
    out = {}
    for name, size, rate in (
        ("notebook 04 model, 40% masked", NB04_MODEL, 0.4),
        ("speed model, 15% masked", MODEL, 0.15),
    ):
        collator = masking.MLMCollator(tokenizer, mlm_probability=rate, seed=2)
        nets, optimizers, times = {}, {}, {"plain": [], "chunked": []}
        for arm in times:
            torch.manual_seed(0)
            config = model.EncoderConfig(
                **size, dropout=0.0, attention_dropout=0.0, masked_only=True, position="rotary"
            )
            nets[arm] = model.EncoderForMaskedLM(config).train()
            nets[arm].loss_chunk = 0 if arm == "plain" else model.EncoderForMaskedLM.loss_chunk
            optimizers[arm] = torch.optim.AdamW(nets[arm].parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        for step in range(warmup + steps):
            batch = collator(blocks[torch.randint(len(blocks), (BATCH,), generator=generator)])
            for arm in ("plain", "chunked") if step % 2 else ("chunked", "plain"):
                start = time.perf_counter()
                nets[arm](batch["input_ids"], batch["attention_mask"], batch["labels"]).loss.backward()
                optimizers[arm].step()
                optimizers[arm].zero_grad(set_to_none=True)
                if step >= warmup:
                    times[arm].append(time.perf_counter() - start)
        plain, chunked = statistics.median(times["plain"]), statistics.median(times["chunked"])
        out[name] = {
            "plain_step_s": plain,
            "chunked_step_s": chunked,
            "speedup": plain / chunked,
            "loss_chunk": model.EncoderForMaskedLM.loss_chunk,
        }
    return out


WORKERS = {"time": time_rows, "memory": peak_memory, "encoder": encoder_step, "collators": collators, "head": head_step}


def _cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 units as /proc/cpuinfo names them (AVX512-BF16, AMX): without them bf16 autocast is slow."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))


def _in_fresh_process(worker: str, *args):
    """Run one measurement in a new Python process (so its peak memory is its own); return its result."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", worker, json.dumps(args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {worker} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the report
def table(rows: list[dict]) -> str:
    base = rows[0]["real_tokens_per_s"]
    lines = [
        "| pipeline | precision | dropout | real tokens / step | step (s) | real tokens / s | vs baseline P "
        "| peak RSS (MB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {'bf16 autocast' if r['bf16'] else 'fp32'} | {r['dropout']} | "
            f"{r['real_tokens_per_step']:,.0f} | {r['step_s']:.3f} | {r['real_tokens_per_s']:,.0f} | "
            f"{r['real_tokens_per_s'] / base:.1f}x | {r['peak_rss_mb']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per row (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 = the course's laptop)")
    parser.add_argument("--sentences", type=int, default=20_000, help="Brown sentences to draw batches from")
    parser.add_argument("--head-only", action="store_true", help="only the plain vs chunked head comparison")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    parser.add_argument("worker_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](*json.loads(args.worker_args))))
        return 0

    import torch
    import transformers

    from course_lib import data, tokenization

    tokenizer_dir = tempfile.mkdtemp(prefix="speed-tokenizer-")
    tokenization.train_tokenizer(data.english_sentences("train"), vocab_size=MODEL["vocab_size"]).save_pretrained(
        tokenizer_dir
    )
    common = (tokenizer_dir, args.sentences, args.steps, args.warmup, args.threads)
    if args.head_only:
        head = _in_fresh_process("head", *common)
        for name, h in head.items():
            print(
                f"head: {name}: plain {h['plain_step_s']:.3f} s, chunked {h['chunked_step_s']:.3f} s per step "
                f"({h['speedup']:.2f}x; fp32, same batches)"
            )
        if args.out:
            result = {
                "machine": {
                    "platform": platform.platform(),
                    "threads": args.threads,
                    "torch": torch.__version__,
                    "cpu_bf16_units": _cpu_bf16_flags(),
                },
                "steps": args.steps,
                "head_step": head,
            }
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0

    specs = [
        {
            "name": "baseline P: pad to 128 + HF collator + RobertaForMaskedLM",
            "pipeline": "pad",
            "model": "roberta",
            "bf16": False,
            "dropout": 0.1,
        },
        {
            "name": "baseline G: concatenate and chunk + HF collator + RobertaForMaskedLM",
            "pipeline": "group",
            "model": "roberta",
            "bf16": False,
            "dropout": 0.1,
        },
        {
            "name": "course: packing + course collator + course encoder, masked-only",
            "pipeline": "course",
            "model": "course",
            "bf16": False,
            "dropout": 0.1,
        },
        {"name": "course, bf16 autocast", "pipeline": "course", "model": "course", "bf16": True, "dropout": 0.1},
        {
            "name": "course, budget recipe: no dropout",
            "pipeline": "course",
            "model": "course",
            "bf16": False,
            "dropout": 0.0,
        },
    ]
    timings = _in_fresh_process("time", specs, *common)
    rows = [
        {
            **spec,
            **timing,
            "peak_rss_mb": _in_fresh_process("memory", spec, tokenizer_dir, args.sentences, 3, args.threads),
        }
        for spec, timing in zip(specs, timings)
    ]
    for row in rows:
        print(f"  {row['name']}: {row['real_tokens_per_s']:,.0f} real tokens/s", file=sys.stderr)
    encoder = _in_fresh_process("encoder", *common, 0.1)
    print(f"  encoders alone: {encoder}", file=sys.stderr)
    collate = _in_fresh_process("collators", tokenizer_dir, args.sentences, 20, args.threads)
    print(f"  collators: {collate}", file=sys.stderr)
    head = _in_fresh_process("head", *common)
    print(f"  plain vs chunked head: {head}", file=sys.stderr)

    pad, group, course, course_bf16, budget = rows
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu_bf16_units": _cpu_bf16_flags(),
        },
        "model": MODEL,
        "batch": BATCH,
        "steps": args.steps,
        "rows": rows,
        "ratio_vs_pad_baseline": course["real_tokens_per_s"] / pad["real_tokens_per_s"],
        "ratio_vs_group_baseline": course["real_tokens_per_s"] / group["real_tokens_per_s"],
        "budget_recipe_ratio_vs_pad_baseline": budget["real_tokens_per_s"] / pad["real_tokens_per_s"],
        "bf16_ratio_vs_pad_baseline": course_bf16["real_tokens_per_s"] / pad["real_tokens_per_s"],
        "encoder_step_s": encoder,
        "encoder_step_ratio": encoder["roberta"] / encoder["course"],
        "collator_examples_per_s": collate,
        "collator_ratio": collate["course_packed_tensor"] / collate["hf_list_of_dicts"],
        "collator_ratio_same_input": collate["course_list_of_dicts"] / collate["hf_list_of_dicts"],
        "head_step": head,
        "bf16_step_ratio": course["step_s"] / course_bf16["step_s"],
    }
    print(table(rows))
    print()
    print(
        f"ratio_vs_pad_baseline   {result['ratio_vs_pad_baseline']:.2f}   "
        f"(bf16: {result['bf16_ratio_vs_pad_baseline']:.2f})"
    )
    print(f"ratio_vs_group_baseline {result['ratio_vs_group_baseline']:.2f}")
    print(f"budget recipe (dropout 0) vs pad baseline {result['budget_recipe_ratio_vs_pad_baseline']:.2f}")
    print(
        f"encoder_step_ratio      {result['encoder_step_ratio']:.2f}   (RobertaForMaskedLM {encoder['roberta']:.3f} s "
        f"vs course masked-only {encoder['course']:.3f} s per step, fp32, dropout 0.1, same batches)"
    )
    print(
        f"collator_ratio          {result['collator_ratio']:.2f}   (course on packed blocks "
        f"{collate['course_packed_tensor']:,.0f} vs HF on a list of dicts {collate['hf_list_of_dicts']:,.0f} "
        f"examples/s; course on the same list of dicts {collate['course_list_of_dicts']:,.0f}: "
        f"{result['collator_ratio_same_input']:.2f}x)"
    )
    for name, h in head.items():
        print(
            f"head: {name}: plain {h['plain_step_s']:.3f} s, chunked {h['chunked_step_s']:.3f} s per step "
            f"({h['speedup']:.2f}x; fp32, same batches)"
        )
    print(
        f"bf16 autocast vs fp32, course step: {result['bf16_step_ratio']:.2f}x the speed "
        f"(CPU bf16 units: {', '.join(result['machine']['cpu_bf16_units']) or 'none'})"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
