"""Checkers of notebook 01 (byte-pair encoding): exercises 1.1 `train_bpe` and 1.2 `bpe_encode_word`,
compared with the `tokenizers` library's BPE."""

from __future__ import annotations

import random
from typing import Callable

from tokenizers import Tokenizer, models, pre_tokenizers

from course_lib.data import english_paragraphs, english_sentences
from course_lib.tokenization import count_words, tokenizers_bpe, tokenizers_vocab_and_merges, train_bpe

from .framework import expect_equal, run_cases

TOY_CORPUS = ["low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3]


def _random_corpus(seed: int, letters: str = "abcd", lines: int = 20) -> list[str]:
    """Short words over a tiny alphabet: many ties, overlaps like "aaa", and merges built two ways."""
    rng = random.Random(seed)
    return [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(25))
        for _ in range(lines)
    ]


def _english(n: int) -> list[str]:
    return english_sentences("valid", limit=n)


def _english_paragraphs(n: int) -> list[str]:
    return english_paragraphs("valid", limit=n)


def check_train_bpe(train_bpe: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 1.1: `train_bpe(word_counts, vocab_size) -> (vocab, merges)` equals `tokenizers`' BpeTrainer."""

    def trained(texts: list[str], vocab_size: int) -> Callable[[], tuple]:
        def observe():
            vocab, merges = train_bpe(count_words(texts), vocab_size)
            return list(vocab), [tuple(m) for m in merges]

        return observe

    def same_as_tokenizers(texts: list[str], vocab_size: int) -> tuple[Callable, Callable]:
        def judge(got):
            vocab, merges = got
            ref_vocab, ref_merges = tokenizers_vocab_and_merges(tokenizers_bpe(texts, vocab_size))
            expect_equal(merges, ref_merges, "merges")
            expect_equal(vocab, ref_vocab, "vocabularies")

        return trained(texts, vocab_size), judge

    def types():
        vocab, merges = train_bpe(count_words(TOY_CORPUS), 15)
        return (
            type(vocab).__name__,
            [type(t).__name__ for t in vocab],
            [(type(m).__name__, len(m) if isinstance(m, (tuple, list)) else -1) for m in merges],
        )

    def returns_vocab_and_merges(got):
        vocab_type, token_types, merge_types = got
        assert vocab_type == "list" and set(token_types) <= {"str"}, "vocab must be a list of str"
        assert all(kind == "tuple" and n == 2 for kind, n in merge_types), "each merge must be a pair (left, right)"

    run_cases(
        "1.1",
        [
            ("returns (vocab, merges)", types, returns_vocab_and_merges),
            ("toy corpus, 15 tokens", *same_as_tokenizers(TOY_CORPUS, 15)),
            ("toy corpus, runs out of pairs", *same_as_tokenizers(TOY_CORPUS, 100)),
            ("ties and repeated letters", *same_as_tokenizers(_random_corpus(1), 60)),
            ("ties, merges reaching a token twice", *same_as_tokenizers(_random_corpus(2, "ab"), 40)),
            ("English sentences", *same_as_tokenizers(_english(200), 300)),
        ],
        hidden_cases=[
            ("one letter, words of many lengths", *same_as_tokenizers(["aaaaaaa aaaa aa a"] * 3, 10)),
            ("five letters, another seed", *same_as_tokenizers(_random_corpus(7, "abcde"), 50)),
            ("English paragraphs", *same_as_tokenizers(_english_paragraphs(20), 250)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_bpe_encode_word(bpe_encode_word: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 1.2: `bpe_encode_word(word, merges) -> tokens` equals `tokenizers`' BPE model."""

    def words_of(train_texts: list[str], vocab_size: int, texts: list[str]):
        """The merges learned from train_texts, and the words of texts made of letters the vocabulary has."""
        vocab, merges = train_bpe(count_words(train_texts), vocab_size)
        known = set("".join(vocab))
        return vocab, merges, [[w for w in text.split() if set(w) <= known] for text in texts]

    def same_as_tokenizers(train_texts: list[str], vocab_size: int, texts: list[str]) -> tuple[Callable, Callable]:
        def observe():
            _, merges, lines = words_of(train_texts, vocab_size, texts)
            return [[list(bpe_encode_word(w, merges)) for w in words] for words in lines]

        def judge(got):
            vocab, merges, lines = words_of(train_texts, vocab_size, texts)
            reference = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, merges))
            reference.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            expect_equal(len(got), len(lines), "number of texts encoded")
            for words, tokens in zip(lines, got):  # unseen characters are another lesson
                flat = [t for word in tokens for t in word]
                expect_equal(flat, reference.encode(" ".join(words)).tokens, f"tokens of {' '.join(words)[:60]!r}")

        return observe, judge

    def encodes(*calls) -> Callable[[], list]:
        return lambda: [list(bpe_encode_word(word, merges)) for word, merges in calls]

    def expect(*tokens, what: str) -> Callable:
        def judge(got):
            for i, expected in enumerate(tokens):
                expect_equal(got[i], expected, what[i] if isinstance(what, tuple) else what)

        return judge

    english = _english(300)
    run_cases(
        "1.2",
        [
            (
                "no merges apply",
                encodes(("abc", []), ("a", [("a", "b")])),
                expect(["a", "b", "c"], ["a"], what=("tokens of 'abc' with no merges", "tokens of a one-letter word")),
            ),
            (
                # learned ("b", "c") before ("a", "b"): "abc" must become a + bc, not ab + c
                "earliest-learned merge first",
                encodes(("abc", [("b", "c"), ("a", "b")])),
                expect(["a", "bc"], what="tokens of 'abc'"),
            ),
            ("toy corpus, new words", *same_as_tokenizers(TOY_CORPUS, 20, ["lowest newer wider slow"])),
            ("ties and repeated letters", *same_as_tokenizers(_random_corpus(3), 60, _random_corpus(4, lines=5))),
            ("held-out English", *same_as_tokenizers(english[:200], 400, english[200:])),
        ],
        hidden_cases=[
            (
                "overlapping pairs merge left to right",
                encodes(("aaaaa", [("a", "a")])),
                expect(["aa", "aa", "a"], what="tokens of 'aaaaa'"),
            ),
            (
                "five letters, another seed",
                *same_as_tokenizers(_random_corpus(7, "abcde"), 50, _random_corpus(9, "abcde", lines=5)),
            ),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
