"""Copy a finished `python -m course_lib.train` run into a folder that ships with the course (models/brown-small).

    python scripts/prepare_model.py runs/small.2026.11.30.06.40.38.af5212e0 models/brown-small \
        --config configs/small.yaml

The folder gets the Hugging Face export (config, safetensors weights, tokenizer), the run's eval.json,
metrics.jsonl, hparams.json, encoder_config.json, git hash and diff, the config file it was trained with, and a
README with the command and the numbers from eval.json and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the experiment folder of a finished run")
    parser.add_argument("out", type=Path, help="the folder to write (emptied first)")
    parser.add_argument("--config", type=Path, required=True, help="the YAML config the run was started with")
    args = parser.parse_args(argv)

    hf, report = args.run / "hf", json.loads((args.run / "eval.json").read_text())
    if not (hf / "model.safetensors").is_file():
        raise SystemExit(f"{hf} has no model.safetensors: is {args.run} a finished run?")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for path in hf.iterdir():
        shutil.copy2(path, args.out / path.name)
    for name in ("eval.json", "metrics.jsonl", "hparams.json", "encoder_config.json", "githash.log", "gitdiff.log"):
        shutil.copy2(args.run / name, args.out / name)
    shutil.copy2(args.config, args.out / args.config.name)
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = max(r["seconds"] for r in rows if "seconds" in r)
    hparams = json.loads((args.run / "hparams.json").read_text())
    # tokens per block: data.max_length (runs before the sections were renamed recorded it as data.block_size)
    block = hparams["data"].get("max_length", hparams["data"].get("block_size"))
    commit = (args.run / "githash.log").read_text().strip()
    r = report
    (args.out / "README.md").write_text(f"""# {args.out.name}: a model prepared by the course's command line

A masked language model trained by `course_lib`'s own trainer on the corpora shipped in `data/` (Brown
sentences and State of the Union paragraphs): hidden {hparams["model"]["hidden_size"]}, \
{hparams["model"]["num_layers"]} layers, {hparams["model"]["num_heads"]} heads, rotary positions, vocabulary \
{hparams["data"]["vocab_size"]:,}, blocks of {block} tokens, \
{hparams["data"]["mlm_probability"]:.0%} of the tokens masked in training. Hugging Face format
(`RoFormerForMaskedLM`, safetensors): it loads with `AutoModelForMaskedLM`, `AutoTokenizer` and
`pipeline("fill-mask")`, offline.

## How it was made

```sh
python -m course_lib.train --config {args.config.as_posix()} --resume none
```

on the course's development machine (2 CPU cores, fp32), from commit `{commit[:12]}` with the uncommitted
changes in `gitdiff.log` (both recorded by the run when it started). {r["steps"]:,} updates of \
{hparams["train"]["batch_size"]} blocks took {seconds / 60:.0f} minutes of training. `{args.config.name}` is the
config file, `hparams.json` every setting, `metrics.jsonl` the loss of every 10th update and the held-out
evaluations.

## What it scores (`eval.json`)

On the held-out texts, masked once (15%, 80/10/10, {r["eval_tokens"]:,} masked tokens):

| predictor | loss | masked-token accuracy |
|---|---:|---:|
| this model | {r["eval_loss"]:.3f} | {r["accuracy"]:.1%} |
| no context (unigram at `<mask>`, copy of a visible token) | {r["no_context_loss"]:.3f} \
| {r["no_context_accuracy"]:.1%} |
| neighbour counts (left and right) | {r["neighbour_loss"]:.3f} | {r["neighbour_accuracy"]:.1%} |

The model is {r["no_context_loss"] - r["eval_loss"]:.2f} nats below the no-context baseline and \
{r["neighbour_loss"] - r["eval_loss"]:.2f} below the neighbour-count model.
Fill-mask on {r["fill_mask_examples"]} held-out sentences with one whole word masked: top-1 \
{r["fill_mask_top1"]:.1%}, top-5 {r["fill_mask_top5"]:.1%}, {r["distinct_answers"]} distinct answers
(neighbour-count model: top-1 {r["neighbour_fill_mask_top1"]:.1%}, top-5 {r["neighbour_fill_mask_top5"]:.1%};
always answering the commonest word: {r["most_frequent_answer_top1"]:.1%}).

`tests/test_prepared_model.py` loads it and checks that its held-out loss is still {r["eval_loss"]:.3f}.
""")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
