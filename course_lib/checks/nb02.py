"""Checkers of notebook 02 (the masking collator): exercises 2.1 `mask_tokens`, 2.2 `whole_word_mask` and
2.3 `pack_sequences`, checked by their invariants and statistics and against `transformers`' collator."""

from __future__ import annotations

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
    ids = _synthetic_batch(1024)  # 131k positions, ~80k ordinary tokens
    special = torch.isin(ids, torch.tensor(SPECIAL_IDS))
    random_ids = torch.arange(6, 1000, 2)  # only even ids: a random draw from elsewhere shows

    def run(seed=0, source=ids, special_mask=special, **kwargs):
        inputs, labels = mask_tokens(
            source.clone(),
            special_mask,
            mask_token_id=MASK_ID,
            random_token_ids=random_ids,
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )
        return inputs, labels

    def shapes_and_input():
        source = ids.clone()
        inputs, labels = mask_tokens(
            source,
            special,
            mask_token_id=MASK_ID,
            random_token_ids=random_ids,
            generator=torch.Generator().manual_seed(0),
        )
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
            expect_close(r["selected"], mlm_probability, 0.005, "share of ordinary tokens selected")
            expect_close(r["mask"], mask_p, 0.02, "share of selected tokens set to <mask>")
            expect_close(r["random"], random_p, 0.02, "share of selected tokens set to a random id")

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
        inputs, labels = run(
            seed=4,
            source=other,
            special_mask=other_special,
            mlm_probability=1.0,
            mask_replace_prob=0.7,
            random_replace_prob=0.2,
        )
        assert (labels[other_special] == -100).all(), "a special or padding token was selected"
        r = _masking_rates(other, inputs, labels, other_special)
        expect_close(r["selected"], 1.0, 0.0, "share of ordinary tokens selected")
        expect_close(r["mask"], 0.7, 0.02, "share of selected tokens set to <mask>")
        expect_close(r["random"], 0.2, 0.02, "share of selected tokens set to a random id")

    def specials_elsewhere():
        # a tokenizer whose special tokens sit at other ids: <unk> and <mask> (3, 4) occur in the text, and
        # ids 7 and 11 are special too. The special mask says which positions are special, not the ids.
        other = _synthetic_batch(512, length=64, seed=11)
        g = torch.Generator().manual_seed(12)
        for special_id in (3, 4, 7, 11):
            other[torch.rand(other.shape, generator=g) < 0.05] = special_id
        other_special = torch.isin(other, torch.tensor([*SPECIAL_IDS, 7, 11]))
        inputs, labels = run(seed=13, source=other, special_mask=other_special, mlm_probability=0.5)
        assert (labels[other_special] == -100).all(), (
            "a position the special mask marks was selected: take the special tokens from the mask you are "
            "given, not from the ids"
        )
        assert torch.equal(inputs[other_special], other[other_special]), "a position the special mask marks was changed"
        r = _masking_rates(other, inputs, labels, other_special)
        expect_close(r["selected"], 0.5, 0.01, "share of ordinary tokens selected")

    def same_as_library():
        collator = _library_collator(1000, mlm_probability=0.15)
        torch.manual_seed(0)
        lib_inputs, lib_labels = collator.torch_mask_tokens(ids.clone(), special.clone())
        library = _masking_rates(ids, lib_inputs, lib_labels, special)
        inputs, labels = run(seed=3)
        yours = _masking_rates(ids, inputs, labels, special)
        for key in ("selected", "mask", "unchanged"):
            expect_close(yours[key], library[key], 0.025, f"share '{key}' vs DataCollatorForLanguageModeling")

    run_cases(
        "2.1",
        [
            ("shapes, dtypes, input left alone", shapes_and_input),
            ("special and padding tokens never selected", specials_never_selected),
            ("labels: original id if selected, else -100", labels_are_the_originals),
            ("15% selected, 80/10/10", rates(0.15, 0.8, 0.1)),
            ("30% selected, 50/25/25", rates(0.3, 0.5, 0.25, mask_replace_prob=0.5, random_replace_prob=0.25)),
            ("random ids drawn from random_token_ids", random_ids_only_ordinary),
            ("the generator decides", seeded),
            ("rates as DataCollatorForLanguageModeling", same_as_library),
        ],
        hidden_cases=[
            ("nothing selected at probability 0", nothing_selected),
            ("every ordinary token selected at probability 1, 70/20/10", everything_selected),
            ("special tokens at other ids: the special mask decides", specials_elsewhere),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _synthetic_word_ids(rows: int, length: int = 96, seed: int = 0):
    """word_ids as a fast tokenizer gives them: -1 on <s>, </s> and padding; words of 1-4 tokens."""
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


def check_whole_word_mask(whole_word_mask: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 2.2: whole-word selection over the word ids a fast tokenizer gives (byte-level BPE too)."""

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
            expect_close(selected.float().mean().item(), p, 0.012, "share of words selected")

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
        expect_close(first_word_rate, 0.5, 0.06, "share of sequences whose first word is selected")

    def seeded():
        assert torch.equal(run(seed=1), run(seed=1)), "the same generator seed gave other masks"
        assert not torch.equal(run(seed=1), run(seed=2)), "another seed gave the same masks"

    run_cases(
        "2.2",
        [
            ("bool mask, specials never selected", shape_and_specials),
            ("every word all or nothing", whole_words),
            ("15% of words", rate(0.15)),
            ("40% of words", rate(0.4)),
            ("each sequence draws its own words", each_sequence_draws_its_own),
            ("the generator decides", seeded),
        ],
        hidden_cases=[
            ("70% of words", rate(0.7)),
            ("rows without words, short rows", rows_without_words),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_pack_sequences(pack_sequences: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 2.3: packing equals the concatenate-and-chunk recipe of Hugging Face's run_mlm example."""

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

    run_cases(
        "2.3",
        [
            ("short sentences, blocks of 16", same_as_recipe(sentences(50, 10), 16)),
            ("blocks of 128", same_as_recipe(sentences(400), 128)),
            ("sentences longer than a block", same_as_recipe(sentences(30, 300), 64)),
            ("no padding in packed blocks", no_padding),
        ],
        hidden_cases=[
            ("blocks of 3 tokens", same_as_recipe(sentences(20, 5), 3)),
            ("the stream fills the blocks exactly", same_as_recipe([[0] + list(range(5, 15)) + [2]] * 8, 32)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
