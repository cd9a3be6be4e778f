"""Notebook 01: byte-pair encoding (BPE), first from scratch, then with Hugging Face `tokenizers`.

The from-scratch part follows the rules of `tokenizers`' `BpeTrainer` exactly, so the two can be
compared merge for merge:

* words come from splitting on whitespace, and a pair is never formed across two words;
* the first vocabulary is the set of characters, in code-point order;
* each step merges the most frequent adjacent pair (counted over all words, weighted by how often
  each word occurs); a tie goes to the pair whose tokens entered the vocabulary first, i.e. the
  smallest (id of left token, id of right token), where ids follow the order of the vocabulary;
* training stops when the vocabulary has `vocab_size` tokens or no pair is left. A merge whose
  result is already in the vocabulary (say "ab"+"c" after "a"+"bc") does not grow it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, ids 0..4 in this order


# --------------------------------------------------------------------------- from scratch
def count_words(texts: Iterable[str]) -> Counter:
    """How often each whitespace-separated word occurs in `texts`."""
    return Counter(word for text in texts for word in text.split())


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of `pair` in `symbols`, left to right, by the merged token."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def train_bpe(word_counts: dict[str, int], vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn BPE merges from word counts; return (vocabulary in id order, merges in order)."""
    vocab = sorted({ch for word in word_counts for ch in word})
    token_id = {token: i for i, token in enumerate(vocab)}
    words = {tuple(word): n for word, n in word_counts.items()}
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        pair_counts: Counter = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += n
        if not pair_counts:
            break
        best = max(pair_counts, key=lambda p: (pair_counts[p], -token_id[p[0]], -token_id[p[1]]))
        merges.append(best)
        new_token = best[0] + best[1]
        if new_token not in token_id:
            token_id[new_token] = len(vocab)
            vocab.append(new_token)
        words = {merge_pair(symbols, best): n for symbols, n in words.items()}
    return vocab, merges


def bpe_encode_word(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """Split one word into tokens: apply the learned merges, earliest-learned first."""
    rank = {pair: i for i, pair in enumerate(merges)}
    symbols = list(word)
    while len(symbols) > 1:
        # the leftmost occurrence of the earliest-learned pair present in the word
        best_rank, i = min((rank.get(pair, len(rank)), i) for i, pair in enumerate(zip(symbols, symbols[1:])))
        if best_rank == len(rank):
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def bpe_encode(text: str, merges: list[tuple[str, str]]) -> list[str]:
    """Tokenise a text: split on whitespace, then encode each word."""
    return [token for word in text.split() for token in bpe_encode_word(word, merges)]


# --------------------------------------------------------------------------- the library's version
def tokenizers_bpe(texts: Iterable[str], vocab_size: int):
    """The same training with `tokenizers`: whitespace split, no special tokens, every pair counts."""

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False, special_tokens=[])
    tokenizer.train_from_iterator(list(texts), trainer)
    return tokenizer


def tokenizers_vocab_and_merges(tokenizer) -> tuple[list[str], list[tuple[str, str]]]:
    """Read (vocabulary in id order, merges in order) out of a trained `tokenizers` BPE tokenizer."""

    model = json.loads(tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"], key=model["vocab"].get)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


# --------------------------------------------------------------------------- a real tokenizer
def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, max_length: int = 128):
    """Train a RoBERTa-style byte-level BPE tokenizer; return it as a `PreTrainedTokenizerFast`.

    Special tokens `<s> <pad> </s> <unk> <mask>` get ids 0-4; every encoded text is wrapped as
    `<s> ... </s>`; called with `truncation=True` (as `transformers` expects), it cuts texts to
    `max_length` tokens, the last one `</s>`. `<mask>` swallows the space before it, so
    "The <mask> sat." tokenises like "The cat sat." with one token replaced.
    """

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs at least "
            f"{len(SPECIAL_TOKENS) + 256} (5 special tokens + 256 bytes)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, lstrip=(t == "<mask>")) for t in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )


def load_tokenizer(folder: str | Path):
    """Load a tokenizer saved with `save_pretrained`, through `AutoTokenizer`, offline."""

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no tokenizer.json here; save one with tokenizer.save_pretrained({str(folder)!r})"
        )
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def fertility(tokenizer, texts: Iterable[str]) -> float:
    """Tokens per whitespace word over `texts`, special tokens not counted."""
    texts = list(texts)
    words = sum(len(t.split()) for t in texts)
    if words == 0:
        raise ValueError("fertility needs at least one word of text")
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # no warning on long texts
    return sum(len(x) for x in ids) / words
