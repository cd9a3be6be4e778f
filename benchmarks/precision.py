"""fp32 or bf16 autocast on this CPU: the course's training step at the course's model sizes, side by side.

    python benchmarks/precision.py --out benchmarks/results/precision_cpu_amx.json     # about a minute

What `device.auto_precision` decides on a CPU rests on this: for each model size below, one fp32 model and
one bf16-autocast model (same initial weights, same settings) take turns, update by update, in this process
(`training.train_step` on random tokens masked at the size's rate; `--threads` threads, default 2, the
course's laptop), and the median seconds per update of each are compared. Nothing else may run meanwhile.
The sizes are the demo's (configs/tiny.yaml, and the one it had before), notebook 04's, the 256 x 4 model of
`models/brown-small` and `benchmarks/speed.py`, and a few between and beyond, so that the size where bf16
starts to pay shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

# name, hidden, layers, feed-forward width, vocabulary, sequence length, batch, masking rate
SIZES = [
    ("demo (tiny.yaml): 128 x 1, FFN 128, vocab 4,000, 16 x 64 tokens, 40%", 128, 1, 128, 4000, 64, 16, 0.4),
    ("the demo before: 128 x 2, FFN 512, vocab 4,000, 16 x 64, 40%", 128, 2, 512, 4000, 64, 16, 0.4),
    ("notebook 04: 128 x 2, FFN 512, vocab 8,000, 16 x 128, 40%", 128, 2, 512, 8000, 128, 16, 0.4),
    ("128 x 2, FFN 512, vocab 8,000, 64 x 128, 40%", 128, 2, 512, 8000, 128, 64, 0.4),
    ("192 x 3, FFN 768, vocab 4,000, 16 x 64, 40%", 192, 3, 768, 4000, 64, 16, 0.4),
    ("256 x 4, FFN 1024, vocab 4,000, 16 x 64, 40%", 256, 4, 1024, 4000, 64, 16, 0.4),
    ("256 x 4, FFN 1024, vocab 8,000, 16 x 128, 40%", 256, 4, 1024, 8000, 128, 16, 0.4),
    ("brown-small, speed.py: 256 x 4, FFN 1024, vocab 8,000, 32 x 128, 15%", 256, 4, 1024, 8000, 128, 32, 0.15),
    ("384 x 4, FFN 1536, vocab 4,000, 16 x 64, 40%", 384, 4, 1536, 4000, 64, 16, 0.4),
    ("512 x 4, FFN 2048, vocab 8,000, 32 x 128, 15%", 512, 4, 2048, 8000, 128, 32, 0.15),
]


def measure(hidden, layers, ffn, vocab, length, batch, rate, rounds: int, warmup: int) -> dict:
    import torch

    from course_lib import model as M
    from course_lib import training

    arms = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        config = M.EncoderConfig(
            vocab_size=vocab,
            max_length=length,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=max(2, hidden // 64),
            intermediate_size=ffn,
            position="rotary",
            dropout=0.0,
            attention_dropout=0.0,
            masked_only=True,
            pad_token_id=1,
        )
        model = M.EncoderForMaskedLM(config)
        train = training.TrainConfig(max_steps=10_000, batch_size=batch, lr=1e-3, warmup_steps=10, precision=precision)
        optimizer = training.make_optimizer(model, train)
        arms[precision] = (model, optimizer, training.make_scheduler(optimizer, train))
    generator = torch.Generator().manual_seed(0)
    times = {precision: [] for precision in arms}
    for round_ in range(warmup + rounds):
        ids = torch.randint(5, vocab, (batch, length), generator=generator)
        chosen = torch.rand(batch, length, generator=generator) < rate
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        batch_ = {"input_ids": ids.masked_fill(chosen, 4), "attention_mask": torch.ones_like(ids), "labels": labels}
        order = list(arms) if round_ % 2 else list(arms)[::-1]
        for precision in order:
            model, optimizer, scheduler = arms[precision]
            started = time.perf_counter()
            training.train_step(model, [batch_], optimizer, scheduler, precision=precision)
            if round_ >= warmup:
                times[precision].append(time.perf_counter() - started)
    fp32, bf16 = (statistics.median(times[p]) for p in ("fp32", "bf16"))
    return {"fp32_step_s": round(fp32, 5), "bf16_step_s": round(bf16, 5), "bf16_speed_vs_fp32": round(fp32 / bf16, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12, help="timed updates per precision and size")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from course_lib import device

    torch.set_num_threads(args.threads)
    units = device.cpu_bf16_units()
    print(f"CPU bf16 units (as torch reports): {units}; {args.threads} threads", flush=True)
    rows = []
    for name, hidden, layers, ffn, vocab, length, batch, rate in SIZES:
        row = {"size": name, "hidden": hidden, "layers": layers, "ffn": ffn, "vocab": vocab, "length": length}
        row.update(
            batch=batch, rate=rate, **measure(hidden, layers, ffn, vocab, length, batch, rate, args.rounds, args.warmup)
        )
        rows.append(row)
        print(
            f"{name}: fp32 {row['fp32_step_s'] * 1000:.1f} ms, bf16 {row['bf16_step_s'] * 1000:.1f} ms per update: "
            f"bf16 {row['bf16_speed_vs_fp32']:.2f}x the speed of fp32",
            flush=True,
        )
    if args.out:
        result = {
            "benchmark": "fp32 vs bf16 autocast, the course's training step, interleaved",
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "cpu_bf16_units": units,
                "threads": args.threads,
                "torch": torch.__version__,
            },
            "rounds": args.rounds,
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
