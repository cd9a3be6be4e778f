"""Throughput and model FLOPs utilisation (MFU) of the course's training step, against RobertaForMaskedLM.

    python benchmarks/mfu.py --size bert-base --precision bf16 --batch 64 --out mfu.json   # a GPU
    python benchmarks/mfu.py --size small --batch 32 --steps 6                             # a CPU, a smoke run

Rows, timed with their steps interleaved in one process (same random token blocks of length 128, 15% masked
by the course collator, AdamW):

* `hf`: `RobertaForMaskedLM` (sdpa attention), bf16 autocast, the MLM head on every position;
* `course`: the course encoder with masked-only prediction, `training.train_step`, bf16 autocast;
* `course+deepspeed`: the same model in a DeepSpeed engine (bf16 weights, ZeRO stage `--stage`),
  `distributed.ds_train_step`.

Model FLOPs per training token (forward + backward = 3 x forward, 2 FLOPs per multiply-add), counting the
work the masked-LM loss needs: per layer 2 * (4 H^2 + 2 H I) for the projections and 2 * 2 S H for the
attention scores and their weighted sum; the head's dense layer and vocabulary projection, 2 * (H^2 + H V),
only for the 15% of positions that are predicted. (Running the head on every position, as `hf` does, is
work that this count does not credit.) MFU = achieved model FLOP/s / the device's peak dense bf16 FLOP/s,
taken from `--peak-tflops` or from a table of known GPUs; none is reported on a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

SIZES = {
    "bert-base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, vocab_size=30522),
    "small": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, vocab_size=8000),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0}  # dense, SXM
SEQ, P = 128, 0.15


def model_flops_per_token(hidden_size, num_layers, intermediate_size, vocab_size, seq=SEQ, predicted=P, **_) -> float:
    h, i = hidden_size, intermediate_size
    layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq * h
    head = 2 * (h * h + h * vocab_size) * predicted
    return 3 * (num_layers * layer + head)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="bert-base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (after 3 warm-up steps)")
    parser.add_argument("--stage", type=int, default=2, help="ZeRO stage of the DeepSpeed row")
    parser.add_argument("--rows", default="hf,course,course+deepspeed")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s (default: known GPUs)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch
    from transformers import RobertaForMaskedLM

    from course_lib import distributed, masking, model, training
    from course_lib.profiles import set_seed

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if cuda and k in name), None)
    size = SIZES[args.size]
    config = training.TrainConfig(max_steps=10**6, batch_size=args.batch, lr=1e-4, warmup_steps=0, precision="bf16")

    class Tokens:  # what MLMCollator needs of a tokenizer
        pad_token, mask_token, pad_token_id, mask_token_id, all_special_ids = "<pad>", "<mask>", 1, 4, [0, 1, 2, 3, 4]

        def __len__(self):
            return size["vocab_size"]

    collator = masking.MLMCollator(Tokens(), seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = [
        collator(list(torch.randint(5, size["vocab_size"], (args.batch, SEQ), generator=generator))) for _ in range(4)
    ]

    rows = {}
    set_seed(0)
    encoder = model.EncoderConfig(
        max_length=SEQ, pad_token_id=1, dropout=0.1, attention_dropout=0.1, masked_only=True, **size
    )
    if "hf" in args.rows:
        hf = RobertaForMaskedLM(model.roberta_config(encoder)).to(device)  # sdpa attention: the fast baseline
        optimizer = training.make_optimizer(hf, config)
        rows["hf"] = lambda b: training.train_step(
            hf, [b], optimizer, training.make_scheduler(optimizer, config), precision="bf16"
        )
    if "course" in args.rows.split(","):
        course = model.EncoderForMaskedLM(encoder).to(device)
        loop = training.PlainLoop(course, config)
        rows["course"] = lambda b: loop.step([b])
    if "course+deepspeed" in args.rows:
        ds_loop = distributed.DeepSpeedLoop(
            model.EncoderForMaskedLM(encoder), config, distributed.ds_config(args.batch, bf16=True, stage=args.stage)
        )
        rows["course+deepspeed"] = lambda b: ds_loop.step([b])

    times = {row: [] for row in rows}
    for step in range(3 + args.steps):
        for row, step_fn in rows.items():
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            step_fn(batches[step % len(batches)])
            if cuda:
                torch.cuda.synchronize()
            if step >= 3:
                times[row].append(time.perf_counter() - started)

    flops = model_flops_per_token(**size)
    result = {
        "device": name,
        "size": args.size,
        "batch": args.batch,
        "seq": SEQ,
        "precision": "bf16",
        "torch": torch.__version__,
        "model_flops_per_token": flops,
        "peak_tflops": peak,
        "rows": {},
    }
    print(f"{name}: {args.size}, batch {args.batch} x {SEQ}, bf16; model FLOPs/token {flops / 1e9:.2f} G")
    for row, values in times.items():
        step = sorted(values)[len(values) // 2]
        tokens = args.batch * SEQ / step
        achieved = tokens * flops / 1e12
        mfu = achieved / peak if peak else None
        result["rows"][row] = {"step_s": step, "tokens_per_s": tokens, "tflops": achieved, "mfu": mfu}
        print(
            f"  {row:<18} {step:8.4f} s/step {tokens:12,.0f} tokens/s {achieved:8.2f} TFLOP/s"
            + (f"  MFU {mfu:.1%}" if mfu is not None else "")
        )
    if "hf" in rows:
        for row in rows:
            result["rows"][row]["vs_hf"] = result["rows"]["hf"]["step_s"] / result["rows"][row]["step_s"]
        print("  speed vs hf:", ", ".join(f"{row} {result['rows'][row]['vs_hf']:.2f}x" for row in rows))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
