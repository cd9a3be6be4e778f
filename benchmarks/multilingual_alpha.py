"""Notebook 05's alpha = 1 vs alpha = 0.3 comparison with more seeds: per-language gain over the no-context baseline.

    python benchmarks/multilingual_alpha.py --seeds 0 1 --monolingual eng zul \
        --out benchmarks/results/multilingual_alpha_cpu.json
    # ~40 minutes on 2 CPU cores

Notebook 05's `cpu` setting, step for step: the eight shipped languages, a shared tokenizer (vocabulary 8,000)
trained on an alpha = 0.3 sample, sentences cut at 64 tokens in memory-mapped token stores, batches of 64
sentences of one language drawn with p_i proportional to n_i^alpha; notebook 04's recipe (hidden 128, 2 layers,
rotary positions, initial weight scale 0.05, no dropout, masked-only head, 40% masking, peak lr 2e-3, 10%
warmup, linear decay). For each seed (model, language draws, sentence order and masks all follow it) and each
alpha, the model is evaluated per language on the same fixed 15% masks as its no-context baseline and
neighbour-count model (`multilingual.language_baselines`), with its accuracy and the probability it puts on
the language's own vocabulary (`multilingual.own_vocabulary_mass`). `--monolingual LANG ...` adds, for each
seed, a model trained on that language alone with the same recipe, shared tokenizer and number of updates
(every batch from that language), and a second one trained for as many updates as the shared alpha = 0.3
model gave that language (`--matched-alpha`): the controls for "did sharing the model help or hurt it?", at
equal total updates and at equal updates of the language.
Seed 0 is the notebook's own run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.3])
    parser.add_argument("--monolingual", nargs="*", default=[], help="languages to train a model of their own")
    parser.add_argument("--matched-alpha", type=float, default=0.3, help="alone for as many updates as this alpha")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from course_lib import data, masking, multilingual, tokenization, training
    from course_lib.model import EncoderConfig, EncoderForMaskedLM
    from course_lib.profiles import get_profile, set_seed

    P = get_profile(args.profile)
    began = time.perf_counter()
    train_texts = data.load_multilingual(split="train")
    if P.ml_fraction < 1:
        train_texts = {k: v[: max(20, int(len(v) * P.ml_fraction))] for k, v in train_texts.items()}
    eval_texts = {k: v[: P.ml_eval_sentences] for k, v in data.load_multilingual(split="eval").items()}
    sample = multilingual.tokenizer_sample(train_texts, 0.3, sum(map(len, train_texts.values())), seed=0)
    tokenizer = tokenization.train_tokenizer(sample, vocab_size=P.ml_vocab_size, max_length=P.ml_max_length)
    work = Path(tempfile.mkdtemp(prefix="multilingual_alpha_"))
    store = multilingual.TokenStore.build(train_texts, tokenizer, work / "train", 2, P.ml_max_length)
    eval_store = multilingual.TokenStore.build(eval_texts, tokenizer, work / "eval", 2, P.ml_max_length)
    sets = multilingual.eval_sets(eval_store, tokenizer, batch_size=P.ml_batch_size)
    baselines = multilingual.language_baselines(store, tokenizer, sets)
    hidden, layers, heads, ffn = P.lm_size
    runs = {}
    share = multilingual.language_probabilities(store.counts(), args.matched_alpha)
    arms = [(f"alpha={alpha:g}", alpha, store.ranges, P.ml_train_steps) for alpha in args.alphas]
    for lang in args.monolingual:
        matched = max(1, round(P.ml_train_steps * share[lang]))
        arms += [(f"mono={lang}", 1.0, {lang: store.ranges[lang]}, P.ml_train_steps)]
        arms += [(f"mono={lang} steps={matched}", 1.0, {lang: store.ranges[lang]}, matched)]
    for seed in args.seeds:
        for arm, alpha, ranges, steps in arms:
            config = training.TrainConfig(
                max_steps=steps,
                batch_size=P.ml_batch_size,
                lr=P.ml_lr,
                warmup_steps=max(1, steps // 10),
                eval_every=steps,
                save_every=steps,
                keep_last=1,
                seed=seed,
            )
            set_seed(seed)
            model = EncoderForMaskedLM(
                EncoderConfig(
                    vocab_size=len(tokenizer),
                    max_length=P.ml_max_length,
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
            started = time.perf_counter()
            training.train(
                model,
                store,
                None,
                config,
                collator=masking.MLMCollator(tokenizer, mlm_probability=P.mlm_probability, seed=seed),
                folder=training.new_experiment(work, f"{arm.replace(' ', '-')}-seed-{seed}", {}),
                resume=None,
                stream=multilingual.LanguageBatchSampler(ranges, P.ml_batch_size, alpha, seed=seed),
                progress=False,
            )
            judged = {lang: sets[lang] for lang in ranges}
            scores = multilingual.evaluate_languages(model, judged)
            mass = multilingual.own_vocabulary_mass(model, judged, store)
            runs[f"{arm} seed={seed}"] = {
                lang: {
                    "loss": r["loss"],
                    "acc": r["acc"],
                    "gain": baselines[lang]["no_context_loss"] - r["loss"],
                    "own_mass": mass[lang]["mass"],
                }
                for lang, r in scores.items()
            }
            gains = " ".join(f"{lang} {v['gain']:+.2f}" for lang, v in runs[f"{arm} seed={seed}"].items())
            print(f"{arm} seed={seed} ({time.perf_counter() - started:.0f} s): gain {gains}", flush=True)
    summary = {}
    for arm, _, ranges, _ in arms:
        summary[arm] = {}
        for lang in ranges:
            gains = [runs[f"{arm} seed={s}"][lang]["gain"] for s in args.seeds]
            summary[arm][lang] = {"mean_gain": statistics.mean(gains), "spread": max(gains) - min(gains)}
    result = {
        "profile": P.name,
        "seeds": args.seeds,
        "baselines": baselines,
        "runs": runs,
        "summary": summary,
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
