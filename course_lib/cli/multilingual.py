"""The multilingual command line:

    python -m course_lib.multilingual --config configs/multilingual.yaml [--key value ...]

Notebook 05 at any size: a shared tokenizer trained on sentences drawn with p_i proportional to
n_i^alpha, token stores on disk, one model trained on batches of one language each (`sampling.alpha`,
`sampling.mixed`), and a per-language table of held-out loss, perplexity and masked-token accuracy, each
next to that language's no-context baseline and neighbour-count model on the same masks, and the gain
(also written to `eval_languages.json`). The config has the sections of `course_lib.cli.schema`:

    run:      {name, output_dir, resume, device, mode, log_level}   # mode: train, evaluate or both
    data:     {train_folder, eval_folder, languages, max_length, min_length, max_train_texts, max_eval_texts,
               split, vocab_size, tokenizer_sentences, mlm_probability}
    model:    {hidden_size, num_layers, ...}
    train:    {max_steps, batch_size, lr, warmup_steps, seed, ...}
    sampling: {alpha, mixed}

    python -m course_lib.multilingual --config configs/multilingual.yaml --sampling.alpha 0.7 --max_steps 1000

A stopped run continues where its last checkpoint left it when the same command is run again
(`run.resume: auto`), as the pretraining command does.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .. import masking, tokenization, training
from .. import model as model_lib
from ..config import ConfigError
from ..data import load_multilingual, multilingual_dir
from ..multilingual import (
    LanguageBatchSampler,
    TokenStore,
    eval_sets,
    evaluate_languages,
    language_baselines,
    language_probabilities,
    tokenizer_sample,
)
from ..seeding import set_seed
from .common import changed_settings, command_main, device_for, experiment_folder, precision_for, stop_message
from .schema import LanguageData, MultilingualConfig
from .schema import load_multilingual as load_config

log = logging.getLogger("course_lib.multilingual")


def language_texts(config: LanguageData) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(train, eval) sentences per language, as the data section says."""
    train_folder = Path(config.train_folder) if config.train_folder else multilingual_dir()
    train = load_multilingual(train_folder, "train", config.languages or None)
    if config.split > 0:
        cut = {lang: len(lines) - max(1, int(len(lines) * config.split)) for lang, lines in train.items()}
        held = {lang: lines[cut[lang] :] for lang, lines in train.items()}
        train = {lang: lines[: cut[lang]] for lang, lines in train.items()}
    else:
        held = load_multilingual(Path(config.eval_folder) if config.eval_folder else train_folder, "eval", list(train))
    if config.max_train_texts:
        train = {lang: lines[: config.max_train_texts] for lang, lines in train.items()}
    if config.max_eval_texts:
        held = {lang: lines[: config.max_eval_texts] for lang, lines in held.items()}
    return train, held


def _logger(level: str) -> logging.Logger:
    for handler in list(log.handlers):  # a fresh handler on today's stdout (a notebook's or a test's)
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(level.upper())
    return log


def run(config: MultilingualConfig, progress: bool = True, on_step=None) -> dict:
    """Tokenizer -> token stores -> model -> language-batched training -> per-language eval table.
    on_step(step, row): called after each update, as `training.train` does."""
    _logger(config.run.log_level)
    device = device_for(config.run, config.train)  # checked (and fp16 against it) before anything is made
    # the precision it trains in there (bf16 on a T4: fp16), recorded in hparams.json with the one asked for
    config, hparams, notice = precision_for(config, device)
    texts = language_texts(config.data)  # read (and checked) before anything is made too
    if notice:
        log.info(notice)
    if config.run.mode == "evaluate":
        folder = training.find_experiment(config.run.output_dir, config.run.name)
        if folder is None:
            raise ConfigError(
                f"run.mode=evaluate: no checkpoint of a run named {config.run.name!r} in {config.run.output_dir}"
            )
        changed = changed_settings(
            folder, hparams, keys=("model.", "data.max_length", "data.vocab_size", "data.tokenizer")
        )
        if changed:  # the checkpoint would not fit the model these settings make
            raise ConfigError(f"run.mode=evaluate: {folder} was trained with other model settings ({changed})")
        start = "auto"
    else:
        folder, start = experiment_folder(config.run, hparams)
    log.info(f"experiment folder: {folder}{' (resuming)' if start and config.run.mode != 'evaluate' else ''}")
    reached = {}  # the last update done, for the line Ctrl-C prints
    with stop_message(folder, reached):  # Ctrl-C: one line saying where the run stopped
        data = config.data
        train_texts, eval_texts = texts
        log.info("sentences per language: " + ", ".join(f"{lang} {len(t):,}" for lang, t in train_texts.items()))
        saved = folder / "tokenizer"
        if (saved / "tokenizer.json").is_file():  # evaluating, or resuming: the run's own tokenizer
            tokenizer = tokenization.load_tokenizer(saved)
        else:
            if data.tokenizer:
                tokenizer = tokenization.load_tokenizer(data.tokenizer)
            else:  # a shared vocabulary, trained on sentences drawn with the sampling probabilities
                alpha, seed = config.sampling.alpha, config.train.seed
                sample = tokenizer_sample(train_texts, alpha, data.tokenizer_sentences, seed=seed)
                tokenizer = tokenization.train_tokenizer(sample, data.vocab_size, max_length=data.max_length)
            tokenization.save_tokenizer(tokenizer, saved)
        train_store = TokenStore.build(
            train_texts, tokenizer, folder / "data" / "train", data.min_length, data.max_length
        )
        eval_store = TokenStore.build(eval_texts, tokenizer, folder / "data" / "eval", data.min_length, data.max_length)
        sets = eval_sets(eval_store, tokenizer, config.train.batch_size)
        probs = language_probabilities(train_store.counts(), config.sampling.alpha)
        for lang, n in train_store.counts().items():
            log.info(f"  {lang}: {n:>7,} sentences, p = {probs[lang]:.3f}")
        set_seed(config.train.seed)
        encoder_config = config.model.encoder_config(len(tokenizer), data.max_length, tokenizer.pad_token_id)
        model = model_lib.EncoderForMaskedLM(encoder_config).to(device)
        if config.run.mode != "evaluate":
            sampler = LanguageBatchSampler(
                train_store.ranges,
                config.train.batch_size,
                config.sampling.alpha,
                seed=config.train.seed,
                mixed=config.sampling.mixed,
            )
            collator = masking.MLMCollator(tokenizer, mlm_probability=data.mlm_probability, seed=config.train.seed)
            all_eval = [b for batches in sets.values() for b in batches]

            def step_done(step, row):
                reached["step"] = step
                if on_step is not None:
                    on_step(step, row)

            training.train(
                model,
                train_store,
                all_eval,
                config.train,
                collator=collator,
                folder=folder,
                resume=start,
                progress=progress,
                stream=sampler,
                on_step=step_done,
            )
        else:  # the newest readable checkpoint (an unreadable one is skipped with a warning)
            path, _ = training.load_latest(
                folder / "checkpoints", lambda path: training.load_checkpoint(path, model=model, restore_rng=False)
            )
            log.info(f"evaluating {path}")
        results = {}
        if config.run.mode != "train":
            results = evaluate_languages(model, sets)
            baselines = language_baselines(train_store, tokenizer, sets)
            log.info(
                f"{'lang':>6} {'loss':>7} {'ppl':>9} {'acc':>6}   {'no-context':>10} {'gain':>6}   {'neighbour':>9}"
                "   (gain: nats below the language's no-context baseline, on the same masks)"
            )
            for lang, r in results.items():
                b = baselines[lang]
                r.update(
                    no_context_loss=b["no_context_loss"],
                    no_context_accuracy=b["no_context_accuracy"],
                    neighbour_loss=b["neighbour_loss"],
                    neighbour_accuracy=b["neighbour_accuracy"],
                    gain=b["no_context_loss"] - r["loss"],
                )
                log.info(
                    f"{lang:>6} {r['loss']:7.3f} {r['ppl']:9.1f} {r['acc']:6.1%}   {b['no_context_loss']:10.3f}"
                    f" {r['gain']:+6.2f}   {b['neighbour_loss']:9.3f}"
                )
            (folder / "eval_languages.json").write_text(json.dumps(results, indent=2) + "\n")
        return {"folder": folder, "eval": results}


def main(argv: list[str] | None = None) -> int:
    """`python -m course_lib.multilingual`: 0 when the run finished, 2 for a user error (one `error:` line)."""
    return command_main(
        "python -m course_lib.multilingual",
        __doc__,
        load_config,
        run,
        argv,
        example="--sampling.alpha 0.7 --train.max_steps 100",
    )


if __name__ == "__main__":
    raise SystemExit(main())
