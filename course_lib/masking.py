"""Notebook 02: the masking collator, which turns plain text into the masked-language-model task.

BERT's recipe (Devlin et al., 2019), used by RoBERTa with *dynamic* masking (a fresh mask each
time a sequence is seen, not one fixed when the data is prepared):

1. select each token with probability `mlm_probability` (15%), never a special token or padding;
2. labels = the original id at the selected positions and -100 elsewhere: -100 is the index that
   `torch.nn.CrossEntropyLoss` ignores, so the loss covers the selected tokens only;
3. of the selected tokens, 80% become `<mask>`, 10% a random token and 10% stay as they are. The
   model never knows which visible tokens are genuine, so it must represent every token well, and
   fine-tuning, where `<mask>` never appears, looks less foreign.

Then the tricks that decide how much compute is wasted: whole-word masking, a fixed-mask eval set,
dynamic padding, sequence packing and length-bucketed batches. Everything is vectorised: the only
Python loops run over the examples of a batch (to turn lists into tensors), never over tokens.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

IGNORE_INDEX = -100  # the label of every position the loss must skip
EVAL_MLM_PROBABILITY = 0.15  # the held-out masks of every notebook and command line, whatever rate training uses


def _check_probabilities(**probabilities: float) -> None:
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p!r} must be a probability in [0, 1]")


def _check_replacement(mask_replace_prob: float, random_replace_prob: float) -> None:
    _check_probabilities(mask_replace_prob=mask_replace_prob, random_replace_prob=random_replace_prob)
    if mask_replace_prob + random_replace_prob > 1:
        raise ValueError(
            f"mask_replace_prob + random_replace_prob = {mask_replace_prob} + {random_replace_prob} exceeds 1"
        )


def special_tokens_mask(input_ids: torch.Tensor, special_ids) -> torch.Tensor:
    """True where `input_ids` holds one of `special_ids` (`<s>`, `</s>`, `<pad>`, ...): never masked."""
    special = torch.tensor([int(i) for i in special_ids], dtype=input_ids.dtype, device=input_ids.device)
    return torch.isin(input_ids, special)


def apply_replacement(
    input_ids,
    selected,
    *,
    mask_token_id,
    random_token_ids,
    mask_replace_prob=0.8,
    random_replace_prob=0.1,
    generator=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 step on already `selected` positions (a bool tensor); returns (inputs, labels).

    One uniform number u per position decides: u < mask_replace_prob -> `mask_token_id`;
    u < mask_replace_prob + random_replace_prob -> an id drawn uniformly from `random_token_ids`
    (the non-special ids); otherwise the token stays. `input_ids` itself is not modified.
    """
    _check_replacement(mask_replace_prob, random_replace_prob)
    if selected.shape != input_ids.shape:
        raise ValueError(f"selected has shape {tuple(selected.shape)}, input_ids {tuple(input_ids.shape)}")
    random_token_ids = torch.as_tensor(random_token_ids, dtype=input_ids.dtype, device=input_ids.device)
    if random_token_ids.numel() == 0:
        raise ValueError("random_token_ids is empty: random replacement needs at least one non-special id")
    selected = selected.bool()
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = selected & (u < mask_replace_prob)
    to_random = selected & ~to_mask & (u < mask_replace_prob + random_replace_prob)
    pick = torch.randint(len(random_token_ids), (input_ids.numel(),), generator=generator, device=input_ids.device)
    # the same as random_token_ids[pick], but index_select ran ~10x faster on a busy 2-core CPU
    random_ids = random_token_ids.index_select(0, pick).view_as(input_ids)
    inputs = torch.where(to_mask, mask_token_id, input_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    *,
    mask_token_id: int,
    random_token_ids: torch.Tensor,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT dynamic masking (Exercise 2.1): select, then replace 80/10/10; returns (inputs, labels).

    Each position where `special_mask` is False is selected with probability `mlm_probability`.
    The same `generator` state gives the same result; `input_ids` is never modified.
    """
    _check_probabilities(mlm_probability=mlm_probability)
    if special_mask.shape != input_ids.shape:
        raise ValueError(f"special_mask has shape {tuple(special_mask.shape)}, input_ids {tuple(input_ids.shape)}")
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    selected = (u < mlm_probability) & ~special_mask.bool()
    return apply_replacement(
        input_ids,
        selected,
        mask_token_id=mask_token_id,
        random_token_ids=random_token_ids,
        mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob,
        generator=generator,
    )


def whole_word_mask(
    word_ids: torch.Tensor, mlm_probability: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Whole-word masking (Exercise 2.2): select each *word* with probability `mlm_probability`.

    `word_ids` [batch, seq] gives each token's word index in its sequence (a fast tokenizer's
    `word_ids()`; -1 for special tokens and padding). Returns a bool mask, True on every token of
    every selected word. Predicting "potamus" next to "hippo" is easy; predicting the whole word
    from its context is not. Each token is still selected with probability `mlm_probability`,
    but all tokens of one word together.
    """
    _check_probabilities(mlm_probability=mlm_probability)
    if word_ids.dim() != 2:
        raise ValueError(f"word_ids must be [batch, seq], got shape {tuple(word_ids.shape)}")
    n_words = int(word_ids.max()) + 1 if word_ids.numel() else 0
    chosen = torch.rand(word_ids.shape[0], max(n_words, 1), generator=generator, device=word_ids.device)
    chosen = chosen < mlm_probability  # one draw per (sequence, word)
    return chosen.gather(1, word_ids.clamp(min=0)) & (word_ids >= 0)  # each token takes its word's draw


def word_ids_tensor(encoding_word_ids: list[list[int | None]], length: int | None = None) -> torch.Tensor:
    """Lists of word ids (None for special tokens) -> LongTensor [batch, length], None and padding -1."""
    if len(encoding_word_ids) == 0:
        raise ValueError("encoding_word_ids is empty")
    rows = [torch.tensor([-1 if w is None else w for w in ids], dtype=torch.long) for ids in encoding_word_ids]
    return _pad(rows, -1, length=length)


def _pad(rows: list[torch.Tensor], value: int, multiple: int | None = None, length: int | None = None):
    """Stack 1-D tensors into [batch, longest], padded on the right with `value`; longer if asked."""
    out = pad_sequence(rows, batch_first=True, padding_value=value)
    target = out.shape[1] if length is None else length
    if target < out.shape[1]:
        raise ValueError(f"length={length} is shorter than the longest sequence ({out.shape[1]})")
    if multiple:
        target += -target % multiple
    return F.pad(out, (0, target - out.shape[1]), value=value)


def _check_tokenizer(tokenizer) -> None:
    for name in ("mask", "pad"):
        if getattr(tokenizer, f"{name}_token", None) is None:
            raise ValueError(
                f"the tokenizer has no {name} token (tokenizer.{name}_token is None); masked "
                f"language modelling needs one: train it with {name}_token set (see notebook 01)"
            )


def _random_token_ids(tokenizer) -> torch.Tensor:
    """Every id of the tokenizer that is not special: what a random replacement draws from."""
    ids = torch.arange(len(tokenizer))
    return ids[~special_tokens_mask(ids, tokenizer.all_special_ids)]


def _example_ids(examples, word_ids: bool = False) -> list[torch.Tensor]:
    """The input ids of each example (a dict with "input_ids", a list of ints or a 1-D tensor)."""
    if len(examples) == 0:
        raise ValueError("the batch is empty: no examples to collate")
    rows = []
    for i, ex in enumerate(examples):
        is_dict = isinstance(ex, Mapping)
        if is_dict and "input_ids" not in ex:
            raise ValueError(f"example {i} has no 'input_ids' (its keys: {', '.join(map(str, ex)) or 'none'})")
        if word_ids and not (is_dict and "word_ids" in ex):
            raise ValueError(
                f"whole_word=True needs 'word_ids' in every example; example {i} has none "
                f"(store encoding.word_ids(i) next to its input_ids when tokenising)"
            )
        rows.append(torch.as_tensor(ex["input_ids"] if is_dict else ex, dtype=torch.long))
        if word_ids and len(ex["word_ids"]) != len(rows[-1]):
            raise ValueError(f"example {i}: {len(ex['word_ids'])} word_ids for {len(rows[-1])} input_ids")
    return rows


class MLMCollator:
    """The course's `DataCollatorForLanguageModeling`: pad a batch, then mask it afresh.

    `DataLoader(dataset, batch_size=32, collate_fn=MLMCollator(tokenizer, seed=0))`. Examples are
    dicts with "input_ids" (and "word_ids" when `whole_word=True`), lists of ids, or the rows of a
    2-D tensor of packed blocks. A batch is padded to its own longest example (dynamic padding),
    rounded up to a multiple of `pad_to_multiple_of` if given (8 suits tensor cores). With
    `whole_word=True` whole words are selected and then replaced 80/10/10 token by token, as in
    Google's BERT (`DataCollatorForLanguageModeling` uses `<mask>` only for whole words).

    The collator draws from its own `torch.Generator`: seeded with `seed`, or from torch's global
    RNG when `seed` is None. In a DataLoader worker it is reseeded from the worker's seed (plus
    `seed`), which DataLoader draws afresh per worker and per epoch, so workers and epochs see
    different masks and `torch.manual_seed` still makes the run repeatable.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability=0.15,
        mask_replace_prob=0.8,
        random_replace_prob=0.1,
        whole_word=False,
        pad_to_multiple_of=None,
        seed=None,
    ):
        _check_tokenizer(tokenizer)
        _check_probabilities(mlm_probability=mlm_probability)
        _check_replacement(mask_replace_prob, random_replace_prob)
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r} must be a positive integer or None")
        self.tokenizer, self.mlm_probability, self.whole_word = tokenizer, mlm_probability, whole_word
        self.pad_to_multiple_of, self.seed = pad_to_multiple_of, seed
        self.special_ids = tokenizer.all_special_ids
        self.replacement = dict(
            mask_token_id=tokenizer.mask_token_id,
            random_token_ids=_random_token_ids(tokenizer),
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
        )
        self.generator, self._worker_seed = None, None

    def _rng(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        worker_seed = worker.seed if worker is not None else None
        if self.generator is None or worker_seed != self._worker_seed:
            if worker_seed is not None:
                seed = (worker_seed + (self.seed or 0)) % 2**63
            else:
                seed = self.seed if self.seed is not None else int(torch.randint(2**62, ()))
            self.generator, self._worker_seed = torch.Generator().manual_seed(seed), worker_seed
        return self.generator

    def state_dict(self) -> dict:
        """Where the masking RNG is, for checkpoints: a resumed run then draws the very same masks."""
        return {"generator": self._rng().get_state(), "worker_seed": self._worker_seed}

    def load_state_dict(self, state: dict) -> None:
        self.generator, self._worker_seed = torch.Generator(), state["worker_seed"]  # draws nothing from torch's RNG
        self.generator.set_state(state["generator"])

    def __call__(self, examples) -> dict[str, torch.Tensor]:
        if isinstance(examples, torch.Tensor):  # packed blocks: one example per row
            if examples.dim() != 2:
                raise ValueError(
                    f"a tensor batch must be 2-D [n_blocks, block_size], got shape {tuple(examples.shape)}"
                )
            examples = list(examples)
        pad_id = self.tokenizer.pad_token_id
        input_ids = _pad(_example_ids(examples, self.whole_word), pad_id, self.pad_to_multiple_of)
        special, generator = special_tokens_mask(input_ids, self.special_ids), self._rng()
        if self.whole_word:
            words = word_ids_tensor([ex["word_ids"] for ex in examples], length=input_ids.shape[1])
            selected = whole_word_mask(words, self.mlm_probability, generator) & ~special
            inputs, labels = apply_replacement(input_ids, selected, **self.replacement, generator=generator)
        else:
            inputs, labels = mask_tokens(
                input_ids, special, mlm_probability=self.mlm_probability, **self.replacement, generator=generator
            )
        return {"input_ids": inputs, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


def fixed_eval_masks(examples, tokenizer, seed: int = 0, mlm_probability: float = 0.15) -> list[dict]:
    """Mask an eval set once, with its own generator seeded with `seed`: the same call gives the
    same masks every time, whatever the global RNG, so eval losses (and perplexity) of different
    checkpoints are measured on the very same task. Returns [{"input_ids", "labels"}] (lists);
    batch them with `pad_batch`, which does not mask again.

    The examples are masked as one concatenated stream, before any padding, so the masks do not
    depend on the batch size you evaluate with.
    """
    _check_tokenizer(tokenizer)
    rows = _example_ids(examples)
    stream = torch.cat(rows)
    inputs, labels = mask_tokens(
        stream,
        special_tokens_mask(stream, tokenizer.all_special_ids),
        mask_token_id=tokenizer.mask_token_id,
        random_token_ids=_random_token_ids(tokenizer),
        mlm_probability=mlm_probability,
        generator=torch.Generator().manual_seed(seed),
    )
    sizes = [len(r) for r in rows]
    return [{"input_ids": i.tolist(), "labels": y.tolist()} for i, y in zip(inputs.split(sizes), labels.split(sizes))]


def pad_batch(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate already-masked examples without masking again: input_ids padded with `pad_token_id`,
    labels with -100, attention_mask 1 on real tokens."""
    rows = _example_ids(examples)
    for i, ex in enumerate(examples):
        if "labels" not in ex or len(ex["labels"]) != len(rows[i]):
            raise ValueError(f"example {i} needs 'labels' as long as its input_ids ({len(rows[i])})")
    input_ids = _pad(rows, pad_token_id)
    labels = _pad([torch.as_tensor(ex["labels"], dtype=torch.long) for ex in examples], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_token_id).long(), "labels": labels}


def pack_sequences(
    token_ids: list[list[int]], block_size: int = 128, drop_last: bool = True, *, pad_token_id: int = 1
) -> torch.Tensor:
    """Sequence packing, RoBERTa's FULL-SENTENCES: concatenate the tokenised texts (each already
    `<s> ... </s>`) into one stream and cut it into blocks [n_blocks, block_size]. A text may run on
    into the next block. No padding at all, so no compute is spent on it; `drop_last=False` keeps
    the final partial block, padded with `pad_token_id`.

    Attention: tokens attend across the `</s><s>` boundaries inside a block, as in RoBERTa. That
    costs nothing and hurts little (in RoBERTa's ablation, only slightly worse than blocks that stay
    within one document). The alternative, a block-diagonal attention mask that keeps each text to
    itself, forbids cross-text attention but needs an explicit [seq, seq] mask per block, which
    rules out the fastest (flash) attention kernels.
    """
    if block_size < 2:
        raise ValueError(f"block_size={block_size!r} must be at least 2")
    if len(token_ids) == 0 or all(len(t) == 0 for t in token_ids):
        raise ValueError("token_ids is empty: nothing to pack")
    stream = torch.cat([torch.as_tensor(t, dtype=torch.long) for t in token_ids])
    if drop_last:
        if len(stream) < block_size:
            raise ValueError(
                f"the {len(stream)} tokens fill no block of block_size={block_size}; "
                f"use drop_last=False or a smaller block_size"
            )
        stream = stream[: len(stream) // block_size * block_size]
    else:
        stream = F.pad(stream, (0, -len(stream) % block_size), value=pad_token_id)
    return stream.view(-1, block_size)


def length_bucketed_batches(
    lengths: list[int], batch_size: int, seed: int = 0, bucket_multiplier: int = 50
) -> list[list[int]]:
    """Batches of indices whose sequences have similar lengths, so dynamic padding wastes little.

    Shuffle the indices (with `seed`), cut them into buckets of batch_size * bucket_multiplier,
    sort each bucket by length, cut it into batches, and shuffle the batches: each batch is still
    a random draw, just from a narrow length range. Every index appears once. Use as
    `DataLoader(dataset, batch_sampler=length_bucketed_batches(lengths, 32, seed=epoch), ...)`.
    """
    if len(lengths) == 0:
        raise ValueError("lengths is empty: nothing to batch")
    if batch_size < 1 or bucket_multiplier < 1:
        raise ValueError(f"batch_size={batch_size!r} and bucket_multiplier={bucket_multiplier!r} must be positive")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches, size = [], batch_size * bucket_multiplier
    for start in range(0, len(order), size):
        bucket = sorted(order[start : start + size], key=lambda i: lengths[i])
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_stats(lengths: list[int], batches: list[list[int]] | None = None, pad_to: int | None = None) -> dict:
    """How much of a padded batch is padding. `pad_to=128`: every sequence padded (or truncated) to
    128; `batches`: each batch padded to its own longest sequence (lengths capped at `pad_to` if
    given too). Returns real_tokens, pad_tokens, total_tokens and waste = pad / total."""
    if batches is None and pad_to is None:
        raise ValueError("give batches (each padded to its longest) or pad_to (everything padded to it)")
    if pad_to is not None:
        lengths = [min(n, pad_to) for n in lengths]
    if batches is None:
        real, total = sum(lengths), len(lengths) * pad_to
    else:
        real = sum(lengths[i] for batch in batches for i in batch)
        total = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    return {
        "real_tokens": real,
        "pad_tokens": total - real,
        "total_tokens": total,
        "waste": (total - real) / total if total else 0.0,
    }
