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
memory-mapped files (`TokenStore`), so a corpus larger than RAM can be trained on. The command line
(`course_lib.cli.multilingual`, sections `run`, `data`, `model`, `train`, `sampling`) runs it all:

    python -m course_lib.multilingual --config configs/multilingual.yaml --sampling.alpha 0.7
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .baselines import NgramCounts
from .data import DataError
from .masking import fixed_eval_masks
from .training import eval_batches, evaluate

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
    `training.train(..., stream=sampler)` checkpoints and resumes it. (Exercise 5.2, `language_batches`, is
    the essential version: a list of (language, batch) pairs, without the resumable state.)"""

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
            self._orders[lang] = (
                epoch,
                torch.randperm(len(self.ranges[lang]), generator=torch.Generator().manual_seed(seed)),
            )
        return self._orders[lang][1]

    def _take(self, lang: str, k: int) -> list[int]:
        out, pos, n, start = [], self.position[lang], len(self.ranges[lang]), self.ranges[lang].start
        while len(out) < k:
            if pos[1] == n:
                pos[0], pos[1] = pos[0] + 1, 0
            step = min(k - len(out), n - pos[1])
            out += (self._order(lang, pos[0])[pos[1] : pos[1] + step] + start).tolist()
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
        return {
            "generator": self.generator.get_state(),
            "position": {k: list(v) for k, v in self.position.items()},
            "sizes": {lang: len(r) for lang, r in self.ranges.items()},
            "batch_size": self.batch_size,
            "alpha": self.alpha,
            "seed": self.seed,
            "mixed": self.mixed,
        }

    def load_state_dict(self, state: dict) -> None:
        mine = {
            "sizes": {lang: len(r) for lang, r in self.ranges.items()},
            "batch_size": self.batch_size,
            "alpha": self.alpha,
            "seed": self.seed,
            "mixed": self.mixed,
        }
        theirs = {key: state.get(key) for key in mine}
        if mine != theirs:
            raise ValueError(
                f"the checkpoint's sampler was made for {theirs}, this one is {mine}: "
                f"resuming on other data or settings would not continue the same run"
            )
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
    def build(
        cls,
        texts: dict[str, list[str]],
        tokenizer,
        folder,
        min_length: int = 1,
        max_length: int = 128,
        chunk: int = 10_000,
    ) -> "TokenStore":
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
                    ids = tokenizer(lines[i : i + chunk], truncation=True, max_length=max_length, verbose=False)[
                        "input_ids"
                    ]
                    for row in ids:
                        if len(row) - specials >= min_length:
                            out.write(np.asarray(row, dtype=dtype).tobytes())
                            total += len(row)
                            offsets.append(total)
            if len(offsets) == 1:
                raise DataError(
                    f"language {lang!r}: no sentence of at least {min_length} tokens (of {len(lines)} lines)"
                )
            np.save(folder / f"{lang}.offsets.npy", np.asarray(offsets, dtype=np.int64))
            kept[lang] = len(offsets) - 1
        meta = {
            "languages": list(texts),
            "dtype": dtype,
            "sentences": kept,
            "vocab_size": len(tokenizer),
            "min_length": min_length,
            "max_length": max_length,
        }
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


def eval_sets(
    store: TokenStore, tokenizer, batch_size: int, seed: int = 0, limit: int | None = None
) -> dict[str, list[dict]]:
    """Fixed-mask eval batches for each language of `store` (the first `limit` sentences of each)."""
    out = {}
    for lang, r in store.ranges.items():
        rows = [store.sentence(lang, j) for j in range(min(len(r), limit or len(r)))]
        out[lang] = eval_batches(fixed_eval_masks(rows, tokenizer, seed=seed), batch_size, tokenizer.pad_token_id)
    return out


def evaluate_languages(model, sets: dict[str, list[dict]], precision: str = "fp32") -> dict[str, dict]:
    """`training.evaluate` on each language's eval batches: {lang: {loss, ppl, acc, tokens}}."""
    return {lang: evaluate(model, batches, precision) for lang, batches in sets.items()}


def own_vocabulary_mass(model, sets: dict[str, list[dict]], store: TokenStore) -> dict[str, dict]:
    """Where a model's probability goes at each language's masked positions: {lang: {"mass": the mean
    probability it gives the tokens that language's training text contains (its own vocabulary), "own": how
    many tokens that is, "vocabulary": the vocabulary's size}}. A language's no-context predictor puts
    (almost) all its mass there; a shared model that ranks a language's tokens well (accuracy above the
    no-context one) but puts much of its mass on other languages' tokens has a loss above the no-context
    loss all the same: this is the number that tells the two apart."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    result = {}
    for lang, batches in sets.items():
        mass, count, own = 0.0, 0, None
        for batch in batches:
            labels = batch["labels"].to(device)
            with torch.no_grad():
                logits = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    labels=labels,
                ).logits
            where = labels != -100
            if logits.dim() == 3:  # every position; a masked-only head returns the labelled rows already
                logits = logits[where]
            if own is None:
                own = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
                own[torch.as_tensor(np.unique(np.asarray(store.tokens[lang])).astype(np.int64), device=device)] = True
            mass += float(logits.float().softmax(-1)[:, own].sum())
            count += int(where.sum())
        result[lang] = {
            "mass": mass / max(count, 1),
            "own": int(own.sum()) if own is not None else 0,
            "vocabulary": int(own.numel()) if own is not None else 0,
        }
    model.train(was_training)
    return result


def language_baselines(store: TokenStore, tokenizer, sets: dict[str, list[dict]]) -> dict[str, dict]:
    """Notebook 04's two baselines for each language, on that language's own eval masks (`eval_sets`):
    {lang: {no_context_loss, no_context_accuracy, neighbour_loss, neighbour_accuracy, tokens}}.

    Each language's counts come from its own training sentences in `store`, so the no-context predictor
    knows which language it is in (its unigram, not the mixture's). A token the language's training text
    never shows backs off to the unigram of all languages' training text (Witten-Bell weight, no setting):
    without it, 39 Swahili sentences would give most Swahili eval tokens probability 0 and an infinite loss."""
    pooled = NgramCounts.fit([store[i] for i in range(len(store))], tokenizer).unigram
    return {
        lang: NgramCounts.fit(store.language(lang), tokenizer, background=pooled).score(batches)
        for lang, batches in sets.items()
    }


if __name__ == "__main__":  # `python -m course_lib.multilingual`: the command line lives in course_lib.cli.multilingual
    try:  # Ctrl-C while the command line's modules are still loading: one line, as during a run
        from course_lib.cli.multilingual import main
    except KeyboardInterrupt:
        import sys

        print("stopped before training started; nothing was saved", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(main())
