"""Checkers of notebook 05 (multilingual sampling): exercises 5.1 `language_probabilities` and
5.2 `language_batches`, compared with `course_lib.multilingual`."""

from __future__ import annotations

import math
from typing import Callable

from course_lib import multilingual

from .framework import run_cases

# the sizes of the shipped multilingual training files (sentences per language)
_SHIPPED_COUNTS = {
    "eng": 19_844,
    "ita": 20_019,
    "nso": 4_045,
    "por": 20_007,
    "swh": 39,
    "ven": 3_612,
    "xho": 3_652,
    "zul": 4_023,
}


def check_language_probabilities(
    language_probabilities: Callable, hidden: bool | None = None, first_failure: bool = False
) -> None:
    """Exercise 5.1: `language_probabilities(counts, alpha) -> {lang: p}` as
    `course_lib.multilingual.language_probabilities`."""

    def same(counts, alpha):
        def observe():
            return language_probabilities(dict(counts), alpha)

        def judge(got):
            if not isinstance(got, dict) or set(got) != set(counts):
                raise AssertionError(f"expected a dict with one probability per language {sorted(counts)}, got {got!r}")
            expected = multilingual.language_probabilities(counts, alpha)
            for lang in counts:
                # float32 arithmetic is accurate to about 1e-7 relative: the statement does not ask for float64
                if abs(float(got[lang]) - expected[lang]) > 1e-6 * max(1.0, expected[lang]):
                    raise AssertionError(
                        f"alpha={alpha}, language {lang!r}: got {float(got[lang]):.6f}, expected {expected[lang]:.6f}"
                    )

        return observe, judge

    issue = {"zul": 10_000, "xho": 8_000, "swa": 5_000, "ven": 3_000}
    run_cases(
        "5.1",
        [
            ("alpha = 1: in proportion to the data", *same(issue, 1.0)),
            ("alpha = 0.7 (mBERT)", *same(issue, 0.7)),
            ("alpha = 0.3 (XLM-R)", *same(issue, 0.3)),
            ("alpha = 0: uniform", *same(issue, 0.0)),
            ("one language gets probability 1", *same({"eng": 123}, 0.3)),
        ],
        hidden_cases=[
            ("the shipped corpus, alpha 0.5", *same(_SHIPPED_COUNTS, 0.5)),
            ("a million to one, alpha 0.1", *same({"big": 1_000_000, "tiny": 1}, 0.1)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_language_batches(language_batches: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 5.2: `language_batches(sizes, batch_size, alpha, num_batches, seed) -> [(lang, [indices])]`:
    each batch one language, drawn with probability p_i; each language's sentences walked in shuffled
    epochs (every sentence once before any twice); the same seed gives the same batches."""

    def draw(sizes, batch_size, alpha, num_batches, seed=0) -> list:
        """The batches the student's function gives, as it gives them (a generator read to the end)."""
        return list(language_batches(dict(sizes), batch_size, alpha, num_batches, seed))

    def valid(batches, sizes, batch_size, num_batches) -> list[tuple[str, list[int]]]:
        """Drawn batches as (language, [index]) pairs, after checking their number, form, language and indices."""
        if len(batches) != num_batches:
            raise AssertionError(f"asked for {num_batches} batches, got {len(batches)}")
        for k, item in enumerate(batches):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise AssertionError(f"batch {k} should be a (language, indices) pair, got {item!r}")
            lang, indices = item
            if not isinstance(lang, str) or lang not in sizes:
                raise AssertionError(f"batch {k}: {lang!r} is not one of the languages {sorted(sizes)}")
            indices = [int(i) for i in indices]
            if len(indices) != batch_size:
                raise AssertionError(f"batch {k} has {len(indices)} sentences, expected batch_size={batch_size}")
            if not all(0 <= i < sizes[lang] for i in indices):
                raise AssertionError(f"batch {k} ({lang}): indices must be in range({sizes[lang]}), got {indices}")
        return [(str(lang), [int(i) for i in indices]) for lang, indices in batches]

    def frequencies(sizes, alpha, batch_size=4, num_batches=4_000, seed=0):
        def observe():
            return draw(sizes, batch_size, alpha, num_batches, seed)

        def judge(got):
            batches = valid(got, sizes, batch_size, num_batches)
            probs = multilingual.language_probabilities(sizes, alpha)
            for lang, p in probs.items():
                seen = sum(b[0] == lang for b in batches) / num_batches
                sigma = math.sqrt(p * (1 - p) / num_batches)
                if abs(seen - p) > 5 * sigma:
                    raise AssertionError(
                        f"alpha={alpha}: language {lang!r} drawn for {seen:.3f} of the batches, "
                        f"p = {p:.3f} (over {num_batches} batches that is more than 5 standard "
                        f"deviations off)"
                    )

        return observe, judge

    def epochs(sizes, batch_size, alpha=0.5, num_batches=600, seed=0):
        def observe():
            return draw(sizes, batch_size, alpha, num_batches, seed)

        def judge(got):
            walked = {lang: [] for lang in sizes}
            for lang, indices in valid(got, sizes, batch_size, num_batches):
                walked[lang] += indices
            for lang, n in sizes.items():
                full = [walked[lang][e * n : (e + 1) * n] for e in range(len(walked[lang]) // n)]
                for e, order in enumerate(full):
                    if sorted(order) != list(range(n)):
                        repeated = sorted(i for i in set(order) if order.count(i) > 1)[:5]
                        raise AssertionError(
                            f"{lang!r}: sentences {repeated} come twice in the first {n * (e + 1)} "
                            f"drawn, before every sentence was seen once: walk a shuffled "
                            f"order of each language, and reshuffle only when it runs out"
                        )
                if len(full) >= 2 and (full[0] == list(range(n)) or full[0] == full[1]):
                    raise AssertionError(
                        f"{lang!r}: the order is not shuffled afresh each epoch "
                        f"(first epoch {full[0][:8]}..., second {full[1][:8]}...)"
                    )

        return observe, judge

    seeded_sizes = {"a": 300, "b": 40, "c": 7}

    def seeded_draws():
        """Seed 1 twice, then seed 2."""
        return [draw(seeded_sizes, 5, 0.3, 50, seed=seed) for seed in (1, 1, 2)]

    def seeded(got):
        first, again, other = (valid(batches, seeded_sizes, 5, 50) for batches in got)
        if first != again:
            raise AssertionError(
                "the same seed gave different batches: draw every random number from a generator seeded with `seed`"
            )
        if other == first:
            raise AssertionError("seeds 1 and 2 gave the same batches: use `seed`")

    run_cases(
        "5.2",
        [
            ("alpha 0.3: languages drawn with p_i", *frequencies({"big": 5_000, "mid": 800, "small": 37}, 0.3)),
            ("alpha 1: in proportion to the data", *frequencies({"big": 5_000, "mid": 800, "small": 37}, 1.0)),
            ("every sentence of a language once per (shuffled) epoch", *epochs({"a": 50, "b": 13}, 5)),
            ("the same seed gives the same batches", seeded_draws, seeded),
        ],
        hidden_cases=[
            (
                "alpha 0: uniform, other batch size and seed",
                *frequencies({"x": 900, "y": 90, "z": 9}, 0.0, 3, 3_000, 7),
            ),
            ("a language smaller than a batch", *epochs({"big": 100, "tiny": 3}, 8, num_batches=300, seed=3)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
