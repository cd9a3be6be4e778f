"""The budget recipe by equal-cost measurement: batch size x masking rate x peak learning rate (and the model's
size, the optimizer's settings), seeds.

    python benchmarks/recipe.py --budget demo --out benchmarks/results/recipe_demo_cpu.json
    python benchmarks/recipe.py --budget nb04 --arms "b16 m40 lr4e-3" "b32 m40 lr2e-3" \
        --out benchmarks/results/recipe_nb04_cpu.json
    python benchmarks/recipe.py --budget demo --arms "b16 m40 lr4e-3" "b16 m40 lr4e-3 ffn=128 layers=1" ...

A budget is a model, its data and a cost: the seconds one reference run takes on this machine.

* `demo`: the data `configs/tiny.yaml` trains on (Brown, vocabulary 4,000, packed blocks of 64 tokens;
  held-out: 500 sentences masked once at 15%, `cli.pretrain.prepare`); reference: 600 updates of 32 blocks,
  40% masking, with the model the demo had then (MODEL: hidden 128, 2 layers, 2 heads, FFN 512);
* `nb04`: notebook 04's `cpu` setting (vocabulary 8,000, blocks of 128, the same model, 2,000 held-out
  sentences masked once at 15%); reference: 2,000 updates of 32 blocks, 40% masking.

Every arm has rotary positions, no dropout, the masked-only head and fp32, and is named by its batch size (b),
training masking rate (m) and peak learning rate (lr); further `key=value` words change one setting each
(`EXTRAS`): the model's size (hidden=, layers=, heads=, ffn=), the init std (std=, 0.05), the warmup's share of
the updates (warmup=, 0.1; then linear decay to 0, or schedule=cosine), Adam's beta2 (0.98), the weight decay
(wd=, 0.01) and gradient clipping (clip=, 1.0; 0: none); two diagnostics: the feed-forward layers' learning
rate as a multiple of lr (ffn_lr=, 1) and their output projection's init std (ffn_out_std=). First the cost:
one update of every (batch, rate, model size) is timed, interleaved in one process with the thread count a
run uses (`--threads`, default: torch's, all cores), nothing else running; each arm then gets the updates
that fit in the reference run's time (reference updates x reference step time / its step time). Then the
runs, compared in updates and tokens, `--jobs` at a time with one thread each (their wall time is not their
cost). Each run is judged on the budget's fixed held-out masks, next to the no-context baseline and the
neighbour-count model on the same masks; per-seed losses, means and spreads (max - min) are written to
`--out`. `--steps N` gives every arm N updates instead (equal updates, not equal cost: to tell what an arm
does per update from what its cost buys).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import platform
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

BUDGETS = {
    "demo": {"reference": "b32 m40 lr2e-3", "reference_steps": 600},
    "nb04": {"reference": "b32 m40 lr2e-3", "reference_steps": 2000},
}
# both budgets' model, whatever configs/tiny.yaml says now (an arm may change it: hidden=, layers=, heads=, ffn=)
MODEL = dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512)
GRID = {"batch": (8, 16, 32), "rate": (0.15, 0.25, 0.40), "lr": (2e-3, 4e-3)}
ARM = re.compile(r"b(\d+) m(\d+) lr([0-9.e-]+)((?: \S+)*)$")
# settings an arm may change besides batch, rate and lr ('key=value'), with the budget's value by default
SHAPE = ("hidden", "layers", "heads", "ffn")  # the model's size: these change the cost of an update
EXTRAS = {
    "std": 0.05,  # init std
    "warmup": 0.1,  # warmup, as a share of the updates
    "beta2": 0.98,
    "wd": 0.01,  # weight decay
    "clip": 1.0,  # max gradient norm (0: none)
    "schedule": "linear",  # linear or cosine decay to 0 after warmup
    "ffn_lr": 1.0,  # the feed-forward layers' learning rate, as a multiple of lr (a diagnostic)
    "ffn_out_std": None,  # init std of the feed-forward layers' output projection (None: std; a diagnostic)
    "hidden": None,  # None: the budget's model
    "layers": None,
    "heads": None,
    "ffn": None,
}


@dataclasses.dataclass(frozen=True)
class Arm:
    batch: int
    rate: float
    lr: float
    extras: tuple = ()  # (key, value) pairs that differ from EXTRAS

    def get(self, key: str):
        return dict(self.extras).get(key, EXTRAS[key])

    @property
    def shape(self) -> tuple:
        return tuple((k, v) for k, v in self.extras if k in SHAPE)

    @property
    def pair(self) -> tuple:
        """What an update costs depends on: (batch, rate, model shape)."""
        return (self.batch, self.rate, self.shape)


def arm_name(batch: int, rate: float, lr: float) -> str:
    return f"b{batch} m{round(rate * 100)} lr{lr:g}"


def parse_arm(name: str) -> Arm:
    """'b16 m40 lr4e-3' -> batch 16, 40% masking, peak lr 4e-3, everything else as EXTRAS says; further
    'key=value' words change one setting each: 'b16 m40 lr4e-3 warmup=0.05 heads=4' (the older 'std0.02'
    means std=0.02)."""
    match = ARM.match(name)
    usage = (
        f"error: arm {name!r} is not 'b<batch> m<rate %> lr<lr> [key=value ...]', e.g. 'b16 m40 lr4e-3 heads=4'; "
        f"keys: {', '.join(EXTRAS)}"
    )
    if not match:
        raise SystemExit(usage)
    extras = {}
    for word in match[4].split():
        key, _, value = word.partition("=") if "=" in word else ("std", "", word[3:] if word.startswith("std") else "")
        if key not in EXTRAS or not value:
            raise SystemExit(usage)
        if key == "schedule":
            if value not in ("linear", "cosine"):
                raise SystemExit(f"error: arm {name!r}: schedule={value!r}, choose linear or cosine")
            extras[key] = value
        else:
            extras[key] = int(value) if key in SHAPE else float(value)
    extras = tuple(sorted((k, v) for k, v in extras.items() if v != EXTRAS[k]))
    return Arm(int(match[1]), int(match[2]) / 100, float(match[3]), extras)


# --------------------------------------------------------------------------- data and model of a budget
_CACHE: dict = {}


def setup(budget: str):
    """(tokenizer, training blocks, eval batches, model settings) of a budget, built once per process."""
    if budget in _CACHE:
        return _CACHE[budget]
    from course_lib import data, masking, paths, tokenization, training
    from course_lib.cli import pretrain, schema

    if budget == "demo":  # exactly what make demo trains on and is judged on
        config = schema.load_pretrain(paths.course_path("configs", "tiny.yaml"), [])
        texts = {split: pretrain.corpus_texts(config.data, split) for split in ("train", "eval")}
        tokenizer = tokenization.train_tokenizer(
            texts["train"], vocab_size=config.data.vocab_size, max_length=config.data.max_length
        )
        blocks, eval_data = pretrain.prepare(config, tokenizer, texts)
        length = config.data.max_length
    else:  # notebook 04's cpu profile
        train_texts, eval_texts = data.english_sentences("train"), data.english_sentences("valid", limit=2000)
        tokenizer = tokenization.train_tokenizer(train_texts, vocab_size=8000, max_length=128)
        blocks = masking.pack_sequences(tokenizer(train_texts, verbose=False)["input_ids"], 128)
        eval_blocks = masking.pack_sequences(tokenizer(eval_texts, verbose=False)["input_ids"], 128, drop_last=False)
        eval_data = training.eval_batches(
            masking.fixed_eval_masks(list(eval_blocks), tokenizer, seed=0), 32, tokenizer.pad_token_id
        )
        length = 128
    settings = dict(
        vocab_size=len(tokenizer),
        max_length=length,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL,
        position="rotary",
        init_std=0.05,
        dropout=0.0,
        attention_dropout=0.0,
        masked_only=True,
    )
    _CACHE[budget] = tokenizer, blocks, eval_data, settings
    return _CACHE[budget]


def _model(settings: dict, seed: int, arm: Arm | None = None):
    import torch

    from course_lib import model as M
    from course_lib.seeding import set_seed

    changes = {}
    if arm is not None:
        changes["init_std"] = arm.get("std")
        names = {"hidden": "hidden_size", "layers": "num_layers", "heads": "num_heads", "ffn": "intermediate_size"}
        changes.update({names[k]: v for k, v in arm.shape})
    set_seed(seed)
    model = M.EncoderForMaskedLM(M.EncoderConfig(**{**settings, **changes}))
    if arm is not None and arm.get("ffn_out_std") is not None:
        for layer in model.layers:
            torch.nn.init.normal_(layer.feed_forward.down.weight, std=arm.get("ffn_out_std"))
    return model


def _optimizer(model, config, ffn_lr: float = 1.0):
    """training.make_optimizer's AdamW; with ffn_lr != 1 the feed-forward layers' parameters get their own
    groups at ffn_lr x the learning rate (same weight decay rule)."""
    import torch

    from course_lib import training

    if ffn_lr == 1.0:
        return training.make_optimizer(model, config)
    ffn = {id(param) for name, param in model.named_parameters() if ".feed_forward." in name}
    groups = []
    for group in training.param_groups(model, config.weight_decay):
        for in_ffn in (False, True):
            params = [param for param in group["params"] if (id(param) in ffn) == in_ffn]
            if params:
                groups.append({**group, "params": params, "lr": config.lr * (ffn_lr if in_ffn else 1.0)})
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


# --------------------------------------------------------------------------- cost
def cost_key(pair: tuple) -> str:
    """'b32 m40' for (32, 0.4, ()); 'b32 m40 plain head' for (32, 0.4, (), "plain"): the head without chunking;
    'b16 m40 hidden=192 layers=3' for a model of another size."""
    batch, rate, shape, *plain = pair
    words = [f"b{batch} m{round(rate * 100)}", *(f"{k}={v}" for k, v in shape)]
    return " ".join(words) + (" plain head" if plain else "")


def step_costs(budget: str, pairs: list[tuple], threads: int | None, rounds: int = 12, warmup: int = 3):
    """Median seconds per update of each (batch, rate, shape) or (batch, rate, shape, "plain") (the plain head,
    full logits: the course's code before `model.chunked_mlm_loss`), steps interleaved round by round in this
    process."""
    import torch

    from course_lib import masking, training

    if threads:
        torch.set_num_threads(threads)
    tokenizer, blocks, _, settings = setup(budget)
    state = []
    for batch, rate, shape, *plain in pairs:
        model = _model(settings, 0, Arm(batch, rate, 1e-3, shape))
        if plain:
            model.loss_chunk = 0
        config = training.TrainConfig(max_steps=10_000, batch_size=batch, lr=1e-3, warmup_steps=10)
        optimizer = training.make_optimizer(model, config)
        state.append(
            (
                model,
                optimizer,
                training.make_scheduler(optimizer, config),
                training.BatchStream(len(blocks), batch, seed=0),
                masking.MLMCollator(tokenizer, mlm_probability=rate, seed=0),
            )
        )
    times = [[] for _ in pairs]
    for round_ in range(warmup + rounds):
        order = list(range(len(pairs)))
        if round_ % 2:
            order.reverse()
        for i in order:
            model, optimizer, scheduler, stream, collator = state[i]
            started = time.perf_counter()
            training.train_step(model, [collator(blocks[next(stream)])], optimizer, scheduler)
            if round_ >= warmup:
                times[i].append(time.perf_counter() - started)
    return {pair: statistics.median(t) for pair, t in zip(pairs, times)}


# --------------------------------------------------------------------------- one run
def run_arm(budget: str, name: str, steps: int, seed: int) -> dict:
    """Train one arm for `steps` updates with `seed` (model, batch order and masks), one thread; judge it."""
    import torch

    from course_lib import masking, training

    torch.set_num_threads(1)
    arm = parse_arm(name)
    tokenizer, blocks, eval_data, settings = setup(budget)
    model = _model(settings, seed, arm)
    config = training.TrainConfig(
        max_steps=steps,
        batch_size=arm.batch,
        lr=arm.lr,
        warmup_steps=max(1, int(steps * arm.get("warmup") + 1e-9)),
        beta2=arm.get("beta2"),
        weight_decay=arm.get("wd"),
        schedule=arm.get("schedule"),
        max_grad_norm=arm.get("clip"),
        seed=seed,
    )
    optimizer = _optimizer(model, config, arm.get("ffn_lr"))
    scheduler = training.make_scheduler(optimizer, config)
    stream = training.BatchStream(len(blocks), arm.batch, seed=seed)
    collator = masking.MLMCollator(tokenizer, mlm_probability=arm.rate, seed=seed)
    started = time.perf_counter()
    for _ in range(steps):
        training.train_step(
            model, [collator(blocks[next(stream)])], optimizer, scheduler, max_grad_norm=config.max_grad_norm
        )
    seconds = time.perf_counter() - started
    result = training.evaluate(model, eval_data)
    return {
        "arm": name,
        "seed": seed,
        "steps": steps,
        "eval_loss": round(result["loss"], 4),
        "eval_acc": round(result["acc"], 4),
        "seconds_one_thread": round(seconds, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), required=True)
    parser.add_argument("--arms", nargs="+", help="arms to run, e.g. 'b16 m40 lr4e-3' (default: the whole grid)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--threads", type=int, default=None, help="threads for the cost measurement (default: all)")
    parser.add_argument("--steps", type=int, help="the same updates for every arm instead of equal cost")
    parser.add_argument(
        "--costs-from",
        type=Path,
        nargs="+",
        help="take the step costs from an earlier result file "
        "(measured when the machine was quiet) instead of timing them now",
    )
    parser.add_argument("--costs-only", action="store_true", help="time the steps, write them to --out, train nothing")
    parser.add_argument(
        "--reference-head",
        choices=("chunked", "plain"),
        default="chunked",
        help="the budget is the reference run with this head: chunked (today's code) or plain (the "
        "full-logits head the course used before; what the demo cost before the chunked head)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from course_lib.baselines import NgramCounts

    began = time.perf_counter()
    budget = BUDGETS[args.budget]
    arms = args.arms or [arm_name(*a) for a in itertools.product(GRID["batch"], GRID["rate"], GRID["lr"])]
    parsed = {name: parse_arm(name) for name in arms}
    reference = parse_arm(budget["reference"])
    pairs = sorted({arm.pair for arm in parsed.values()} | {reference.pair})
    budget_pair = (*reference.pair, "plain") if args.reference_head == "plain" else reference.pair
    if budget_pair not in pairs:
        pairs.append(budget_pair)
    if args.costs_from:
        stored = {}
        for path in args.costs_from:
            stored.update(json.loads(path.read_text())["step_seconds"])
        missing = [cost_key(pair) for pair in pairs if cost_key(pair) not in stored]
        if missing:
            raise SystemExit(f"error: {' '.join(map(str, args.costs_from))} has no step cost for {', '.join(missing)}")
        costs = {pair: stored[cost_key(pair)] for pair in pairs}
    else:
        costs = step_costs(args.budget, pairs, args.threads)
    seconds = budget["reference_steps"] * costs[budget_pair]
    steps = {name: args.steps or max(1, round(seconds / costs[arm.pair])) for name, arm in parsed.items()}
    for pair, cost in costs.items():
        print(
            f"{cost_key(pair):>20}: {cost * 1000:.0f} ms per update -> {round(seconds / cost):,} updates "
            f"in the reference's {seconds:.0f} s",
            flush=True,
        )
    if args.costs_only:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {
                        "budget": args.budget,
                        "step_seconds": {cost_key(pair): round(c, 4) for pair, c in costs.items()},
                    },
                    indent=1,
                )
                + "\n"
            )
        return 0
    tokenizer, blocks, eval_data, _ = setup(args.budget)
    base = NgramCounts.fit(blocks, tokenizer).score(eval_data)
    print(f"no-context {base['no_context_loss']:.3f}, neighbour counts {base['neighbour_loss']:.3f}", flush=True)

    jobs = [(args.budget, name, steps[name], seed) for name in arms for seed in args.seeds]
    runs = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for row in pool.map(run_arm, *zip(*jobs)):
            runs.append(row)
            print(
                f"{row['arm']:>16}, seed {row['seed']}: {row['steps']:>5} updates, held-out {row['eval_loss']:.3f}, "
                f"accuracy {row['eval_acc']:.1%}",
                flush=True,
            )
    summary = {}
    for name in arms:
        losses = [r["eval_loss"] for r in runs if r["arm"] == name]
        arm = parsed[name]
        summary[name] = {
            "batch": arm.batch,
            "mlm_probability": arm.rate,
            "lr": arm.lr,
            "init_std": arm.get("std"),
            **{k: v for k, v in arm.extras if k != "std"},
            "steps": steps[name],
            "tokens_seen": steps[name] * arm.batch * blocks.shape[1],
            "mean_eval_loss": round(statistics.mean(losses), 4),
            "spread": round(max(losses) - min(losses), 4),
            "losses": losses,
        }
    ranked = sorted(summary, key=lambda n: summary[n]["mean_eval_loss"])
    print("\nequal-cost ranking (mean held-out loss over seeds; spread = max - min):")
    for name in ranked:
        s = summary[name]
        print(f"{name:>16}: {s['mean_eval_loss']:.3f} (spread {s['spread']:.3f}, {s['steps']:,} updates)")
    result = {
        "benchmark": f"equal-cost recipe sweep, budget {args.budget}",
        "reference": budget["reference"],
        "reference_steps": budget["reference_steps"],
        "equal": "updates" if args.steps else "cost",
        "budget_seconds": round(seconds, 1),
        "reference_head": args.reference_head,
        "step_seconds": {cost_key(pair): round(c, 4) for pair, c in costs.items()},
        "costs_from": [str(path) for path in args.costs_from] if args.costs_from else None,
        "seeds": args.seeds,
        "no_context_loss": round(base["no_context_loss"], 4),
        "neighbour_loss": round(base["neighbour_loss"], 4),
        "eval_masked_tokens": base["tokens"],
        "summary": summary,
        "ranking": ranked,
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cost_threads": args.threads or torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
