"""Checkers of notebook 02 (the masking collator): exercises 2.1 `mask_tokens`, 2.2 `whole_word_mask` and
2.3 `pack_sequences`, checked by their invariants and statistics and against `transformers`' collator."""

from __future__ import annotations

import functools
import random
from typing import Callable

import torch
from tokenizers import Tokenizer, models
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from .framework import expect_close, run_cases

SPECIAL_IDS = (0, 1, 2, 3, 4)  # <s> <pad> </s> <unk> <mask>, as the course tokenizer
MASK_ID = 4


def _synthetic_batch(rows: int, length: int = 128, vocab: int = 1000, seed: int = 0):
    """Token ids shaped like real batches: <s> words </s> then padding, of random lengths."""
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
    names = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [f"w{i}" for i in range(len(SPECIAL_IDS), vocab)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(names)}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
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


def check_mask_tokens(mask_tokens: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 2.1: BERT's dynamic 80/10/10 masking, checked by its invariants and its statistics,
    and against `transformers`' DataCollatorForLanguageModeling."""

    def batch():
        """The batch most cases mask (131k positions, ~80k ordinary tokens) and its special mask."""
        ids = _synthetic_batch(1024)
        return ids, torch.isin(ids, torch.tensor(SPECIAL_IDS))

    def everything_batch():
        other = _synthetic_batch(512, length=64, seed=7)
        return other, torch.isin(other, torch.tensor(SPECIAL_IDS))

    def specials_elsewhere_batch():
        # a tokenizer whose special tokens sit at other ids: <unk> and <mask> (3, 4) occur in the text, and
        # ids 7 and 11 are special too. The special mask says which positions are special, not the ids.
        other = _synthetic_batch(512, length=64, seed=11)
        g = torch.Generator().manual_seed(12)
        for special_id in (3, 4, 7, 11):
            other[torch.rand(other.shape, generator=g) < 0.05] = special_id
        return other, torch.isin(other, torch.tensor([*SPECIAL_IDS, 7, 11]))

    def random_ids():
        return torch.arange(6, 1000, 2)  # only even ids: a random draw from elsewhere shows

    def run(seed=0, make=batch, **kwargs):
        source, special_mask = make()
        inputs, labels = mask_tokens(
            source.clone(),
            special_mask,
            mask_token_id=MASK_ID,
            random_token_ids=random_ids(),
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )
        return inputs, labels

    def masked(seed=0, make=batch, **kwargs) -> Callable[[], tuple]:
        return lambda: run(seed, make, **kwargs)

    def observe_shapes_and_input():
        ids, special = batch()
        source = ids.clone()
        inputs, labels = mask_tokens(
            source,
            special,
            mask_token_id=MASK_ID,
            random_token_ids=random_ids(),
            generator=torch.Generator().manual_seed(0),
        )
        return inputs, labels, source.clone()  # the input_ids tensor passed in, after the call

    def shapes_and_input(got):
        inputs, labels, source = got
        ids, _ = batch()
        assert inputs.shape == ids.shape and labels.shape == ids.shape, "inputs and labels keep the batch's shape"
        assert inputs.dtype == torch.long and labels.dtype == torch.long, "ids and labels are integer (long) tensors"
        assert torch.equal(source, ids), "the input_ids passed in were modified; work on a copy"

    def specials_never_selected(got):
        inputs, labels = got
        ids, special = batch()
        assert (labels[special] == -100).all(), "a special or padding token was selected (label != -100)"
        assert torch.equal(inputs[special], ids[special]), "a special or padding token was changed"

    def labels_are_the_originals(got):
        inputs, labels = got
        ids, _ = batch()
        selected = labels != -100
        assert selected.any(), "nothing was selected"
        assert torch.equal(labels[selected], ids[selected]), "labels must hold the original id where selected"
        assert torch.equal(inputs[~selected], ids[~selected]), "a token that was not selected was changed"

    def rates(mlm_probability, mask_p, random_p, **kwargs) -> tuple[Callable, Callable]:
        def judge(got):
            inputs, labels = got
            ids, special = batch()
            r = _masking_rates(ids, inputs, labels, special)
            expect_close(r["selected"], mlm_probability, 0.005, "share of ordinary tokens selected")
            expect_close(r["mask"], mask_p, 0.02, "share of selected tokens set to <mask>")
            expect_close(r["random"], random_p, 0.02, "share of selected tokens set to a random id")

        return masked(mlm_probability=mlm_probability, **kwargs), judge

    def random_ids_only_ordinary(got):
        inputs, labels = got
        ids, _ = batch()
        replaced = (labels != -100) & (inputs != MASK_ID) & (inputs != ids)
        assert replaced.any(), "no token was replaced by a random id"
        assert torch.isin(inputs[replaced], random_ids()).all(), "a random replacement is not from random_token_ids"

    def observe_seeded():
        return run(seed=1), run(seed=1), run(seed=2)

    def seeded(got):
        a, b, c = got
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "the same generator seed gave other masks"
        assert not torch.equal(a[1], c[1]), "another seed gave the same masks: use the generator you are given"

    def nothing_selected(got):
        inputs, labels = got
        ids, _ = batch()
        assert (labels == -100).all(), "a token was selected with mlm_probability=0"
        assert torch.equal(inputs, ids), "a token was changed with mlm_probability=0"

    def everything_selected(got):
        inputs, labels = got
        other, other_special = everything_batch()
        assert (labels[other_special] == -100).all(), "a special or padding token was selected"
        r = _masking_rates(other, inputs, labels, other_special)
        expect_close(r["selected"], 1.0, 0.0, "share of ordinary tokens selected")
        expect_close(r["mask"], 0.7, 0.02, "share of selected tokens set to <mask>")
        expect_close(r["random"], 0.2, 0.02, "share of selected tokens set to a random id")

    def specials_elsewhere(got):
        inputs, labels = got
        other, other_special = specials_elsewhere_batch()
        assert (labels[other_special] == -100).all(), (
            "a position the special mask marks was selected: take the special tokens from the mask you are "
            "given, not from the ids"
        )
        assert torch.equal(inputs[other_special], other[other_special]), "a position the special mask marks was changed"
        r = _masking_rates(other, inputs, labels, other_special)
        expect_close(r["selected"], 0.5, 0.01, "share of ordinary tokens selected")

    def same_as_library(got):
        inputs, labels = got
        ids, special = batch()
        collator = _library_collator(1000, mlm_probability=0.15)
        torch.manual_seed(0)
        lib_inputs, lib_labels = collator.torch_mask_tokens(ids.clone(), special.clone())
        library = _masking_rates(ids, lib_inputs, lib_labels, special)
        yours = _masking_rates(ids, inputs, labels, special)
        for key in ("selected", "mask", "unchanged"):
            expect_close(yours[key], library[key], 0.025, f"share '{key}' vs DataCollatorForLanguageModeling")

    run_cases(
        "2.1",
        [
            ("shapes, dtypes, input left alone", observe_shapes_and_input, shapes_and_input),
            ("special and padding tokens never selected", masked(), specials_never_selected),
            ("labels: original id if selected, else -100", masked(), labels_are_the_originals),
            ("15% selected, 80/10/10", *rates(0.15, 0.8, 0.1)),
            ("30% selected, 50/25/25", *rates(0.3, 0.5, 0.25, mask_replace_prob=0.5, random_replace_prob=0.25)),
            ("random ids drawn from random_token_ids", masked(), random_ids_only_ordinary),
            ("the generator decides", observe_seeded, seeded),
            ("rates as DataCollatorForLanguageModeling", masked(seed=3), same_as_library),
        ],
        hidden_cases=[
            ("nothing selected at probability 0", masked(mlm_probability=0.0), nothing_selected),
            (
                "every ordinary token selected at probability 1, 70/20/10",
                masked(
                    seed=4,
                    make=everything_batch,
                    mlm_probability=1.0,
                    mask_replace_prob=0.7,
                    random_replace_prob=0.2,
                ),
                everything_selected,
            ),
            (
                "special tokens at other ids: the special mask decides",
                masked(seed=13, make=specials_elsewhere_batch, mlm_probability=0.5),
                specials_elsewhere,
            ),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


@functools.lru_cache(maxsize=4)
def _word_ids_table(rows: int, length: int, seed: int):
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


def _synthetic_word_ids(rows: int, length: int = 96, seed: int = 0):
    """word_ids as a fast tokenizer gives them: -1 on <s>, </s> and padding; words of 1-4 tokens.
    (Made once per process for each size and seed, each call given its own copy.)"""
    return _word_ids_table(rows, length, seed).clone()


def _words_selected(mask, word_ids):
    """(row, word) -> was it selected, and each word's index in its row; raises if a word is only partly
    selected."""
    rows = torch.arange(word_ids.shape[0])[:, None].expand_as(word_ids)
    key = (rows * 1000 + word_ids)[word_ids >= 0]
    chosen = mask[word_ids >= 0].long()
    uniq, inverse = torch.unique(key, return_inverse=True)
    totals = torch.zeros(len(uniq), dtype=torch.long).index_add_(0, inverse, chosen)
    sizes = torch.zeros(len(uniq), dtype=torch.long).index_add_(0, inverse, torch.ones_like(chosen))
    partial = ((totals > 0) & (totals < sizes)).sum().item()
    assert partial == 0, f"{partial} words were only partly selected: select whole words"
    return totals > 0, uniq % 1000


def check_whole_word_mask(whole_word_mask: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 2.2: whole-word selection over the word ids a fast tokenizer gives (byte-level BPE too)."""

    def word_ids():
        return _synthetic_word_ids(1500)

    def short_rows():
        other = _synthetic_word_ids(64, length=32, seed=3)
        other[::2] = -1  # every other row holds no word at all
        return other

    def run(p=0.15, seed=0):
        return whole_word_mask(word_ids(), mlm_probability=p, generator=torch.Generator().manual_seed(seed))

    def selected(p=0.15, seed=0) -> Callable[[], object]:
        return lambda: run(p, seed)

    def shape_and_specials(mask):
        ids = word_ids()
        assert mask.shape == ids.shape and mask.dtype == torch.bool, "return a bool tensor shaped like word_ids"
        assert not mask[ids < 0].any(), "a special or padding token (word id -1) was selected"

    def whole_words(mask):
        _words_selected(mask, word_ids())

    def rate(p) -> tuple[Callable, Callable]:
        def judge(mask):
            chosen, _ = _words_selected(mask, word_ids())
            expect_close(chosen.float().mean().item(), p, 0.012, "share of words selected")

        return selected(p), judge

    def observe_rows_without_words():
        return whole_word_mask(short_rows(), mlm_probability=0.7, generator=torch.Generator().manual_seed(5))

    def rows_without_words(mask):
        other = short_rows()
        assert mask.shape == other.shape and mask.dtype == torch.bool, "return a bool tensor shaped like word_ids"
        assert not mask[other < 0].any(), "a special or padding token (word id -1) was selected"
        assert mask[1::2].any(), "no word was selected at mlm_probability=0.7"

    def each_sequence_draws_its_own(mask):
        chosen, word = _words_selected(mask, word_ids())
        first_word_rate = chosen[word == 0].float().mean().item()
        expect_close(first_word_rate, 0.5, 0.06, "share of sequences whose first word is selected")

    def observe_seeded():
        return run(seed=1), run(seed=1), run(seed=2)

    def seeded(got):
        a, b, c = got
        assert torch.equal(a, b), "the same generator seed gave other masks"
        assert not torch.equal(a, c), "another seed gave the same masks"

    run_cases(
        "2.2",
        [
            ("bool mask, specials never selected", selected(), shape_and_specials),
            ("every word all or nothing", selected(), whole_words),
            ("15% of words", *rate(0.15)),
            ("40% of words", *rate(0.4)),
            ("each sequence draws its own words", selected(0.5), each_sequence_draws_its_own),
            ("the generator decides", observe_seeded, seeded),
        ],
        hidden_cases=[
            ("70% of words", *rate(0.7)),
            ("rows without words, short rows", observe_rows_without_words, rows_without_words),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_pack_sequences(pack_sequences: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 2.3: packing equals the concatenate-and-chunk recipe of Hugging Face's run_mlm example."""

    def sentences(seed, n, longest=40) -> Callable[[], list[list[int]]]:
        """Tokenized sentences <s> words </s>, made afresh (from `seed`) for each half of a case."""

        def make():
            rng = random.Random(seed)
            return [[0] + [rng.randrange(5, 999) for _ in range(rng.randint(1, longest))] + [2] for _ in range(n)]

        return make

    def packed(make, block_size) -> Callable[[], object]:
        return lambda: pack_sequences(make(), block_size)

    def library_recipe(token_ids, block_size):
        stream = [t for ids in token_ids for t in ids]
        total = len(stream) // block_size * block_size
        return torch.tensor([stream[i : i + block_size] for i in range(0, total, block_size)], dtype=torch.long)

    def same_as_recipe(make, block_size) -> tuple[Callable, Callable]:
        def judge(got):
            expected = library_recipe(make(), block_size)
            assert isinstance(got, torch.Tensor) and got.dtype == torch.long, "return a long tensor"
            assert got.shape == expected.shape, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            assert torch.equal(got, expected), "blocks differ from the concatenated stream cut every block_size tokens"

        return packed(make, block_size), judge

    def no_padding(blocks):
        assert isinstance(blocks, torch.Tensor), "return a long tensor"
        assert not (blocks == 1).any(), "a packed block holds padding"

    run_cases(
        "2.3",
        [
            ("short sentences, blocks of 16", *same_as_recipe(sentences(0, 50, 10), 16)),
            ("blocks of 128", *same_as_recipe(sentences(1, 400), 128)),
            ("sentences longer than a block", *same_as_recipe(sentences(2, 30, 300), 64)),
            ("no padding in packed blocks", packed(sentences(3, 300), 64), no_padding),
        ],
        hidden_cases=[
            ("blocks of 3 tokens", *same_as_recipe(sentences(4, 20, 5), 3)),
            (
                "the stream fills the blocks exactly",
                *same_as_recipe(lambda: [[0] + list(range(5, 15)) + [2]] * 8, 32),
            ),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
