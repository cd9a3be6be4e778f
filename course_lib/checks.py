"""Checkers for the notebooks' exercises.

Each check cell calls one function here with the student's code. It runs a few cases, comparing
the student's results with those of the library the course is checked against (never with the
student's own output), then prints one fixed line, `Exercise N.k passed: c/c checks`, that nbval
compares. Any failed case raises `CheckFailed`, naming the case and what differed.
"""

from __future__ import annotations

import random
from typing import Callable

# --------------------------------------------------------------------------- the frame


class CheckFailed(AssertionError):
    """An exercise's code gave a wrong result; the message says which case and how."""


Case = tuple[str, Callable[[], None]]


def run_cases(exercise: str, cases: list[Case]) -> None:
    """Run every case; print the pass line, or raise `CheckFailed` listing each failed case."""
    failures = []
    for name, case in cases:
        try:
            case()
        except NotImplementedError:
            raise  # the exercise is not written yet: say so plainly
        except Exception as e:  # a crash in student code is a failed case, with its message
            detail = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            failures.append(f"{name}: {detail}")
    if failures:
        raise CheckFailed(
            f"Exercise {exercise} failed {len(failures)} of {len(cases)} checks:\n"
            + "\n".join(f"  - {f}" for f in failures)
        )
    print(f"Exercise {exercise} passed: {len(cases)}/{len(cases)} checks")


def expect_equal(got, expected, what: str) -> None:
    """Raise an AssertionError that shows the first difference between two sequences (or values)."""
    if got == expected:
        return
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        for i, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                raise AssertionError(f"{what} differ at position {i}: got {g!r}, expected {e!r}")
        raise AssertionError(f"{what}: got {len(got)} items, expected {len(expected)}")
    raise AssertionError(f"{what}: got {got!r}, expected {expected!r}")


# --------------------------------------------------------------------------- notebook 01

TOY_CORPUS = ["low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3]


def _random_corpus(seed: int, letters: str = "abcd", lines: int = 20) -> list[str]:
    """Short words over a tiny alphabet: many ties, overlaps like "aaa", and merges built two ways."""
    rng = random.Random(seed)
    return [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(25))
        for _ in range(lines)
    ]


def _english(n: int) -> list[str]:
    from .data import english_sentences

    return english_sentences("valid", limit=n)


def check_train_bpe(train_bpe: Callable) -> None:
    """Exercise 1.1: `train_bpe(word_counts, vocab_size) -> (vocab, merges)` equals `tokenizers`' BpeTrainer."""
    from .tokenization import count_words, tokenizers_bpe, tokenizers_vocab_and_merges

    def same_as_tokenizers(texts: list[str], vocab_size: int) -> Callable[[], None]:
        def case():
            vocab, merges = train_bpe(count_words(texts), vocab_size)
            ref_vocab, ref_merges = tokenizers_vocab_and_merges(tokenizers_bpe(texts, vocab_size))
            expect_equal([tuple(m) for m in merges], ref_merges, "merges")
            expect_equal(list(vocab), ref_vocab, "vocabularies")

        return case

    def returns_vocab_and_merges():
        vocab, merges = train_bpe(count_words(TOY_CORPUS), 15)
        assert isinstance(vocab, list) and all(isinstance(t, str) for t in vocab), "vocab must be a list of str"
        assert all(isinstance(m, tuple) and len(m) == 2 for m in merges), "each merge must be a pair (left, right)"

    run_cases("1.1", [
        ("returns (vocab, merges)", returns_vocab_and_merges),
        ("toy corpus, 15 tokens", same_as_tokenizers(TOY_CORPUS, 15)),
        ("toy corpus, runs out of pairs", same_as_tokenizers(TOY_CORPUS, 100)),
        ("ties and repeated letters", same_as_tokenizers(_random_corpus(1), 60)),
        ("ties, merges reaching a token twice", same_as_tokenizers(_random_corpus(2, "ab"), 40)),
        ("English sentences", same_as_tokenizers(_english(200), 300)),
    ])


def check_bpe_encode_word(bpe_encode_word: Callable) -> None:
    """Exercise 1.2: `bpe_encode_word(word, merges) -> tokens` equals `tokenizers`' BPE model."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from .tokenization import count_words, train_bpe

    def same_as_tokenizers(train_texts: list[str], vocab_size: int, texts: list[str]) -> Callable[[], None]:
        def case():
            vocab, merges = train_bpe(count_words(train_texts), vocab_size)
            reference = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, merges))
            reference.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            known = set("".join(vocab))
            for text in texts:
                words = [w for w in text.split() if set(w) <= known]  # unseen characters are another lesson
                got = [t for w in words for t in bpe_encode_word(w, merges)]
                expect_equal(list(got), reference.encode(" ".join(words)).tokens, f"tokens of {' '.join(words)[:60]!r}")

        return case

    def no_merges():
        expect_equal(list(bpe_encode_word("abc", [])), ["a", "b", "c"], "tokens of 'abc' with no merges")
        expect_equal(list(bpe_encode_word("a", [("a", "b")])), ["a"], "tokens of a one-letter word")

    def merge_order_matters():
        # learned ("b", "c") before ("a", "b"): "abc" must become a + bc, not ab + c
        expect_equal(list(bpe_encode_word("abc", [("b", "c"), ("a", "b")])), ["a", "bc"], "tokens of 'abc'")

    english = _english(300)
    run_cases("1.2", [
        ("no merges apply", no_merges),
        ("earliest-learned merge first", merge_order_matters),
        ("toy corpus, new words", same_as_tokenizers(TOY_CORPUS, 20, ["lowest newer wider slow"])),
        ("ties and repeated letters", same_as_tokenizers(_random_corpus(3), 60, _random_corpus(4, lines=5))),
        ("held-out English", same_as_tokenizers(english[:200], 400, english[200:])),
    ])
