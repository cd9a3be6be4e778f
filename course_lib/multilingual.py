"""Notebook 05: pretraining on many languages at once, XLM-R style.

The data is a folder of `train.{lang}` / `eval.{lang}` files (optionally gzipped), one sentence per
line. Languages come in very different sizes, so how often each is seen is a choice:

    q_i = n_i / N                    (the share of language i in the data)
    p_i = q_i^alpha / sum_j q_j^alpha (the probability that a batch is in language i)

alpha = 1 samples in proportion to the data; alpha -> 0 gives every language the same share. mBERT
used 0.7, XLM-R 0.3: small languages are seen far more often than their share (they are repeated,
"upsampled") and large ones a bit less.

Every batch holds sentences of one language, drawn with probability p_i (`LanguageBatchSampler`);
`mixed=True` draws the language of each sentence instead. The sentences are tokenised once into
memory-mapped files (`TokenStore`), so a corpus larger than RAM can be trained on. A master config
(`MultilingualConfig`: `common`, `dataset`, `model`, `train` sections) drives it from YAML and the
command line:

    python -m course_lib.multilingual --config configs/multilingual.yaml --dataset.lang_sampling_factor 0.7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import DataError, multilingual_dir, read_lines
from .train import ConfigError, ModelConfig, apply_overrides, from_dict
from .training import TrainConfig

log = logging.getLogger("course_lib.multilingual")
LOG_LEVELS = ("debug", "info", "warning", "error")
MODES = ("train", "evaluate", "both")


# --------------------------------------------------------------------------- how often each language


def language_probabilities(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """p_i = q_i^alpha / sum_j q_j^alpha with q_i = n_i / N: the probability of drawing language i.

    alpha = 1: in proportion to the data; alpha = 0: uniform; in between, small languages gain."""
    if not counts:
        raise ValueError("language_probabilities: no languages given")
    for lang, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"language {lang!r} has {n!r} sentences; every language needs at least one")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (lang_sampling_factor) must be between 0 and 1, got {alpha!r}")
    total = sum(counts.values())
    weights = {lang: (n / total) ** alpha for lang, n in counts.items()}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}


def expected_sentences(counts: dict[str, int], alpha: float, total: int | None = None) -> dict[str, float]:
    """How many sentences of each language `total` drawn sentences hold on average (default: one
    "epoch", total = N). Divided by n_i this is how many times each sentence is seen."""
    probs = language_probabilities(counts, alpha)
    total = sum(counts.values()) if total is None else total
    return {lang: p * total for lang, p in probs.items()}


def tokenizer_sample(texts: dict[str, list[str]], alpha: float, size: int, seed: int = 0) -> list[str]:
    """`size` sentences drawn language by language with probabilities p_i (with replacement within a
    language): what XLM-R trains its shared vocabulary on, so small languages get tokens of their own."""
    probs = language_probabilities({lang: len(lines) for lang, lines in texts.items()}, alpha)
    rng = np.random.default_rng(seed)
    out = []
    for lang, lines in texts.items():
        picks = rng.integers(0, len(lines), size=round(probs[lang] * size))
        out += [lines[i] for i in picks]
    return out


# --------------------------------------------------------------------------- batches of one language


class LanguageBatchSampler:
    """Batches of example indices, each batch in one language drawn with probability p_i.

    `ranges` maps each language to its examples' index range (`TokenStore.ranges`). Within a
    language the sentences are walked through in a shuffled order, batch_size at a time; when the
    order runs out a new shuffle starts (a batch may straddle the two), so every sentence of a
    language is seen once before any is seen twice. `mixed=True` draws a language for every sentence
    instead of every batch. An endless iterator with `state_dict()` / `load_state_dict()`, so
    `training.train(..., stream=sampler)` checkpoints and resumes it."""

    def __init__(self, ranges: dict[str, range], batch_size: int, alpha: float, seed: int = 0, mixed: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.ranges, self.batch_size, self.alpha, self.seed, self.mixed = dict(ranges), batch_size, alpha, seed, mixed
        self.langs = list(self.ranges)
        self.probs = language_probabilities({lang: len(r) for lang, r in self.ranges.items()}, alpha)
        self._p = torch.tensor([self.probs[lang] for lang in self.langs], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self.position = {lang: [0, 0] for lang in self.langs}  # (epoch, index) in each language's order
        self._orders = {}

    def _order(self, lang: str, epoch: int) -> torch.Tensor:
        if self._orders.get(lang, (None,))[0] != epoch:
            seed = (self.seed * 1_000_003 + epoch) * 1_009 + self.langs.index(lang)
            self._orders[lang] = (epoch, torch.randperm(len(self.ranges[lang]), generator=torch.Generator().manual_seed(seed)))
        return self._orders[lang][1]

    def _take(self, lang: str, k: int) -> list[int]:
        out, pos, n, start = [], self.position[lang], len(self.ranges[lang]), self.ranges[lang].start
        while len(out) < k:
            if pos[1] == n:
                pos[0], pos[1] = pos[0] + 1, 0
            step = min(k - len(out), n - pos[1])
            out += (self._order(lang, pos[0])[pos[1]:pos[1] + step] + start).tolist()
            pos[1] += step
        return out

    def next_language(self) -> str:
        return self.langs[int(torch.multinomial(self._p, 1, generator=self.generator))]

    def __iter__(self):
        return self

    def __next__(self) -> list[int]:
        if not self.mixed:
            return self._take(self.next_language(), self.batch_size)
        picks = torch.multinomial(self._p, self.batch_size, replacement=True, generator=self.generator)
        return [i for k in picks.tolist() for i in self._take(self.langs[k], 1)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "position": {k: list(v) for k, v in self.position.items()},
                "sizes": {lang: len(r) for lang, r in self.ranges.items()}, "batch_size": self.batch_size,
                "alpha": self.alpha, "seed": self.seed, "mixed": self.mixed}

    def load_state_dict(self, state: dict) -> None:
        mine = {"sizes": {lang: len(r) for lang, r in self.ranges.items()}, "batch_size": self.batch_size,
                "alpha": self.alpha, "seed": self.seed, "mixed": self.mixed}
        theirs = {key: state.get(key) for key in mine}
        if mine != theirs:
            raise ValueError(f"the checkpoint's sampler was made for {theirs}, this one is {mine}: "
                             f"resuming on other data or settings would not continue the same run")
        self.generator.set_state(state["generator"])
        self.position = {k: list(v) for k, v in state["position"].items()}


def batch_languages(batches: list[list[int]], ranges: dict[str, range]) -> list[str]:
    """The language of each batch ("mixed" when it has more than one)."""
    def lang_of(i):
        return next(lang for lang, r in ranges.items() if i in r)
    out = []
    for batch in batches:
        langs = {lang_of(i) for i in batch}
        out.append(langs.pop() if len(langs) == 1 else "mixed")
    return out


# --------------------------------------------------------------------------- tokenised data on disk


class TokenStore:
    """Tokenised sentences of several languages in memory-mapped files, one example per sentence.

    Per language, `{lang}.tokens` holds every sentence's token ids back to back (uint16 when the
    vocabulary fits, else int32) and `{lang}.offsets.npy` where each sentence starts. Opened with
    `np.memmap`, only the pages that batches touch are read into RAM. Examples are numbered language
    after language; `ranges[lang]` is each language's index range, `store[i]` a 1-D tensor of ids."""

    def __init__(self, folder):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{self.folder}: not a token store (no meta.json); build one with TokenStore.build")
        self.meta = json.loads(meta_path.read_text())
        self.tokens, self.offsets, self.ranges, start = {}, {}, {}, 0
        for lang in self.meta["languages"]:
            self.offsets[lang] = np.load(self.folder / f"{lang}.offsets.npy")
            self.tokens[lang] = np.memmap(self.folder / f"{lang}.tokens", dtype=self.meta["dtype"], mode="r")
            n = len(self.offsets[lang]) - 1
            self.ranges[lang], start = range(start, start + n), start + n

    @classmethod
    def build(cls, texts: dict[str, list[str]], tokenizer, folder, min_length: int = 1, max_length: int = 128,
              chunk: int = 10_000) -> "TokenStore":
        """Tokenise each language's sentences (in chunks, cut to max_length tokens with the special
        tokens, dropped below min_length tokens without them) and write them to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dtype = "uint16" if len(tokenizer) <= 2**16 else "int32"
        kept = {}
        for lang, lines in texts.items():
            offsets, total, specials = [0], 0, tokenizer.num_special_tokens_to_add()
            with open(folder / f"{lang}.tokens", "wb") as out:
                for i in range(0, len(lines), chunk):
                    ids = tokenizer(lines[i:i + chunk], truncation=True, max_length=max_length, verbose=False)["input_ids"]
                    for row in ids:
                        if len(row) - specials >= min_length:
                            out.write(np.asarray(row, dtype=dtype).tobytes())
                            total += len(row)
                            offsets.append(total)
            if len(offsets) == 1:
                raise DataError(f"language {lang!r}: no sentence of at least {min_length} tokens "
                                f"(of {len(lines)} lines)")
            np.save(folder / f"{lang}.offsets.npy", np.asarray(offsets, dtype=np.int64))
            kept[lang] = len(offsets) - 1
        meta = {"languages": list(texts), "dtype": dtype, "sentences": kept, "vocab_size": len(tokenizer),
                "min_length": min_length, "max_length": max_length}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return cls(folder)

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges.values())

    def counts(self) -> dict[str, int]:
        return {lang: len(r) for lang, r in self.ranges.items()}

    def sentence(self, lang: str, j: int) -> torch.Tensor:
        lo, hi = self.offsets[lang][j], self.offsets[lang][j + 1]
        return torch.from_numpy(self.tokens[lang][lo:hi].astype(np.int64))

    def __getitem__(self, i: int) -> torch.Tensor:
        for lang, r in self.ranges.items():
            if i in r:
                return self.sentence(lang, i - r.start)
        raise IndexError(f"example {i} is out of range (the store has {len(self)})")

    def language(self, lang: str) -> list[torch.Tensor]:
        return [self.sentence(lang, j) for j in range(len(self.ranges[lang]))]


# --------------------------------------------------------------------------- evaluation per language


def eval_sets(store: TokenStore, tokenizer, batch_size: int, seed: int = 0, limit: int | None = None) -> dict[str, list[dict]]:
    """Fixed-mask eval batches for each language of `store` (the first `limit` sentences of each)."""
    from .masking import fixed_eval_masks
    from .training import eval_batches

    out = {}
    for lang, r in store.ranges.items():
        rows = [store.sentence(lang, j) for j in range(min(len(r), limit or len(r)))]
        out[lang] = eval_batches(fixed_eval_masks(rows, tokenizer, seed=seed), batch_size, tokenizer.pad_token_id)
    return out


def evaluate_languages(model, sets: dict[str, list[dict]], precision: str = "fp32") -> dict[str, dict]:
    """`training.evaluate` on each language's eval batches: {lang: {loss, ppl, acc, tokens}}."""
    from .training import evaluate

    return {lang: evaluate(model, batches, precision) for lang, batches in sets.items()}


# --------------------------------------------------------------------------- the master config


@dataclass
class DatasetConfig:
    train_folder: str | None = None  # a folder of train.{lang}[.gz] files (None: the shipped data/multilingual)
    eval_folder: str | None = None  # where eval.{lang}[.gz] are (None: the train folder)
    languages: list[str] = field(default_factory=list)  # the languages to use (empty: every train.{lang} found)
    lang_sampling_factor: float = 0.3  # alpha: 1 proportional, 0.7 mBERT, 0.3 XLM-R, 0 uniform
    min_length: int = 2  # drop sentences of fewer tokens (special tokens not counted)
    max_length: int = 128  # cut longer sentences to this many tokens
    max_sentences: int | None = None  # read at most this many training sentences per language
    eval_sentences: int | None = 1000  # held-out sentences per language, masked once
    split: float = 0.0  # > 0: hold out this fraction of each train.{lang} for eval instead of reading eval.{lang}
    batch_size: int = 32
    mixed_batches: bool = False  # True: every sentence draws its own language
    vocab_size: int = 8000  # of the shared tokenizer
    tokenizer_sentences: int = 50_000  # sentences, sampled with alpha, to train the shared tokenizer on

    def __post_init__(self):
        if not 0 <= self.lang_sampling_factor <= 1:
            raise ConfigError(f"dataset.lang_sampling_factor must be between 0 and 1, got {self.lang_sampling_factor}")
        if not 0 <= self.split < 1:
            raise ConfigError(f"dataset.split must be in [0, 1), got {self.split}")
        for name in ("min_length", "max_length", "batch_size", "tokenizer_sentences"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dataset.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 8 or self.min_length > self.max_length - 2:
            raise ConfigError(f"dataset.max_length={self.max_length} must be >= 8 and leave room for "
                              f"min_length={self.min_length} plus 2 special tokens")
        for name in ("max_sentences", "eval_sentences"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"dataset.{name} must be a positive integer or null, got {getattr(self, name)}")
        if self.vocab_size < 261:
            raise ConfigError(f"dataset.vocab_size must be at least 261, got {self.vocab_size}")


@dataclass
class CommonConfig:
    run_name: str = "multilingual"
    mode: str = "both"  # train, evaluate (the newest checkpoint of run_name), or both
    log_level: str = "info"
    output_dir: str = "runs"
    device: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"common.mode={self.mode!r}: choose one of {', '.join(MODES)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"common.log_level={self.log_level!r}: choose one of {', '.join(LOG_LEVELS)}")
        if not self.run_name or any(c in self.run_name for c in "/\\") or self.run_name.startswith("."):
            raise ConfigError(f"common.run_name={self.run_name!r} must be a plain folder name")


@dataclass
class MultilingualConfig:
    """The master config: every section in one object, from a dict or a YAML file plus overrides."""

    common: CommonConfig = field(default_factory=CommonConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, values: dict | None, overrides: list[str] = ()) -> "MultilingualConfig":
        return from_dict(cls, apply_overrides(values or {}, list(overrides), cls))

    @classmethod
    def from_yaml(cls, path, overrides: list[str] = ()) -> "MultilingualConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        try:
            return cls.from_dict(values, overrides)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_texts(config: DatasetConfig) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(train, eval) sentences per language, as the dataset config says."""
    from .data import load_multilingual

    train_folder = Path(config.train_folder) if config.train_folder else multilingual_dir()
    langs = config.languages or None
    train = load_multilingual(train_folder, "train", langs)
    if config.split > 0:
        cut = {lang: len(lines) - max(1, int(len(lines) * config.split)) for lang, lines in train.items()}
        held = {lang: lines[cut[lang]:] for lang, lines in train.items()}
        train = {lang: lines[:cut[lang]] for lang, lines in train.items()}
    else:
        held = load_multilingual(Path(config.eval_folder) if config.eval_folder else train_folder, "eval", list(train))
    if config.max_sentences:
        train = {lang: lines[:config.max_sentences] for lang, lines in train.items()}
    if config.eval_sentences:
        held = {lang: lines[:config.eval_sentences] for lang, lines in held.items()}
    return train, held


def run(config: MultilingualConfig, progress: bool = True) -> dict:
    """Tokenizer -> token stores -> model -> language-batched training -> per-language eval table."""
    from . import masking, model as model_lib, tokenization, training
    from .device import get_device
    from .profiles import set_seed

    for handler in list(log.handlers):  # a fresh handler on today's stdout (a notebook's or a test's)
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(config.common.log_level.upper())
    ds, device = config.dataset, get_device(config.common.device)
    root = Path(config.common.output_dir)
    if config.common.mode == "evaluate":
        folder = training.find_experiment(root, config.common.run_name)
        if folder is None or training.latest_checkpoint(folder / "checkpoints") is None:
            raise ConfigError(f"common.mode=evaluate: no checkpoint of a run named {config.common.run_name!r} in {root}")
        tokenizer = tokenization.load_tokenizer(folder / "tokenizer")
    else:
        folder = training.new_experiment(root, config.common.run_name, config.to_dict())
        tokenizer = None
    log.info(f"experiment folder: {folder}")
    train_texts, eval_texts = load_texts(ds)
    log.info("sentences per language: " + ", ".join(f"{lang} {len(t):,}" for lang, t in train_texts.items()))
    if tokenizer is None:
        sample = tokenizer_sample(train_texts, ds.lang_sampling_factor, ds.tokenizer_sentences, seed=config.train.seed)
        tokenizer = tokenization.train_tokenizer(sample, ds.vocab_size, max_length=ds.max_length)
        tokenizer.save_pretrained(str(folder / "tokenizer"))
    train_store = TokenStore.build(train_texts, tokenizer, folder / "data" / "train", ds.min_length, ds.max_length)
    eval_store = TokenStore.build(eval_texts, tokenizer, folder / "data" / "eval", ds.min_length, ds.max_length)
    sets = eval_sets(eval_store, tokenizer, ds.batch_size)
    probs = language_probabilities(train_store.counts(), ds.lang_sampling_factor)
    for lang, n in train_store.counts().items():
        log.info(f"  {lang}: {n:>7,} sentences, p = {probs[lang]:.3f}")
    set_seed(config.train.seed)
    encoder_config = model_lib.EncoderConfig(vocab_size=len(tokenizer), max_length=ds.max_length,
                                             pad_token_id=tokenizer.pad_token_id, **dataclasses.asdict(config.model))
    model = model_lib.EncoderForMaskedLM(encoder_config).to(device)
    train_config = dataclasses.replace(config.train, batch_size=ds.batch_size)
    if config.common.mode != "evaluate":
        sampler = LanguageBatchSampler(train_store.ranges, ds.batch_size, ds.lang_sampling_factor,
                                       seed=config.train.seed, mixed=ds.mixed_batches)
        collator = masking.MLMCollator(tokenizer, seed=config.train.seed)
        all_eval = [b for batches in sets.values() for b in batches]
        training.train(model, train_store, all_eval, train_config, collator=collator, folder=folder,
                       resume=None, progress=progress, stream=sampler)
    else:
        training.load_checkpoint(training.latest_checkpoint(folder / "checkpoints"), model=model, restore_rng=False)
    results = {}
    if config.common.mode != "train":
        results = evaluate_languages(model, sets)
        log.info(f"{'lang':>6} {'loss':>7} {'ppl':>9} {'acc':>6}")
        for lang, r in results.items():
            log.info(f"{lang:>6} {r['loss']:7.3f} {r['ppl']:9.1f} {r['acc']:6.1%}")
        (folder / "eval_languages.json").write_text(json.dumps(results, indent=2) + "\n")
    return {"folder": folder, "eval": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.multilingual", description=__doc__.split("\n")[0],
                                     epilog="Any config key can follow as --section.key value "
                                            "(e.g. --dataset.lang_sampling_factor 0.7 --train.max_steps 100).")
    parser.add_argument("--config", help="a YAML master config (see configs/multilingual.yaml)")
    parser.add_argument("--no-progress", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    try:
        config = (MultilingualConfig.from_yaml(args.config, overrides) if args.config
                  else MultilingualConfig.from_dict({}, overrides))
        run(config, progress=not args.no_progress)
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
