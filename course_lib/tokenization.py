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

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, ids 0..4 in this order
# what the tokenizer returns: the course's models have one token type, so no token_type_ids (transformers 4.x
# would add them, and a pair's 1s would be out of range for the exported models)
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


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
        model_input_names=MODEL_INPUT_NAMES,  # transformers 4.x would add token_type_ids (5.x does not)
    )


def load_tokenizer(folder: str | Path):
    """Load a tokenizer saved with `save_tokenizer` (or `save_pretrained`), through `AutoTokenizer`, offline."""

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no tokenizer.json here; save one with save_tokenizer(tokenizer, {str(folder)!r})"
        )
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


# --------------------------------------------------------------------------- saving for transformers 4.x and 5.x

# tokenizer_config.json keys that say how a tokenizer was loaded (transformers 5 writes them back), not what it is
LOADING_KEYS = (
    "backend",
    "is_local",
    "local_files_only",
    "cache_dir",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
    "use_fast",
    "name_or_path",
    "tokenizer_file",
    "special_tokens_map_file",
    "files_loaded",
    "_commit_hash",
    "_from_auto",
    "_from_pipeline",
)


def _state(component) -> dict | None:
    """A `tokenizers` component (normalizer, pre-tokenizer, decoder, post-processor) as the JSON it is saved as."""
    return None if component is None else json.loads(component.__getstate__())


def _same_pipeline(backend, built: tuple) -> bool:
    """Whether the backend's normalizer, pre-tokenizer, decoder and post-processor are `built`'s."""
    mine = (backend.normalizer, backend.pre_tokenizer, backend.decoder, backend.post_processor)
    return [_state(part) for part in mine] == [_state(part) for part in built]


def portable_class(tokenizer) -> tuple[str, dict]:
    """The tokenizer class to name in tokenizer_config.json, and the settings to write with it, so that
    transformers 4.x and 5.x both load the very same tokenizer.

    "RobertaTokenizerFast" for a RoBERTa-style byte-level BPE, "BertTokenizerFast" for a BERT-style WordPiece.
    transformers 4.x loads tokenizer.json as saved and only re-checks a few settings against those it is given
    (add_prefix_space, trim_offsets; do_lower_case, strip_accents, tokenize_chinese_chars); 5.x builds the
    class's own pipeline from the vocabulary (and merges) with those settings. So a class is named only when
    the pipeline it builds, with the settings read from this tokenizer, is this tokenizer's own, component for
    component; anything else gets "PreTrainedTokenizerFast", which both versions load from tokenizer.json as
    saved."""
    backend = tokenizer.backend_tokenizer
    model = json.loads(backend.to_str())["model"]
    pre, norm, post = (
        _state(part) or {} for part in (backend.pre_tokenizer, backend.normalizer, backend.post_processor)
    )
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if None in (cls_id, sep_id):  # both classes put them around every text
        return "PreTrainedTokenizerFast", {}
    cls, sep = str(tokenizer.cls_token), str(tokenizer.sep_token)
    if model["type"] == "BPE" and pre.get("type") == "ByteLevel":
        settings = {"add_prefix_space": pre["add_prefix_space"], "trim_offsets": post.get("trim_offsets", True)}
        # the pipeline transformers 5's RobertaTokenizer builds with these settings
        built = (
            None,
            pre_tokenizers.ByteLevel(add_prefix_space=settings["add_prefix_space"]),
            decoders.ByteLevel(),
            processors.RobertaProcessing((sep, sep_id), (cls, cls_id), **settings),
        )
        options = ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback")
        plain = not any(model.get(key) for key in options) and not model.get("ignore_merges")
        if plain and _same_pipeline(backend, built):
            return "RobertaTokenizerFast", settings
    if model["type"] == "WordPiece" and norm.get("type") == "BertNormalizer":
        settings = {
            "do_lower_case": norm["lowercase"],
            "strip_accents": norm["strip_accents"],
            "tokenize_chinese_chars": norm["handle_chinese_chars"],
        }
        # the pipeline transformers 5's BertTokenizer builds with these settings
        built = (
            normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=settings["tokenize_chinese_chars"],
                strip_accents=settings["strip_accents"],
                lowercase=settings["do_lower_case"],
            ),
            pre_tokenizers.BertPreTokenizer(),
            decoders.WordPiece(prefix="##"),
            processors.TemplateProcessing(
                single=f"{cls}:0 $A:0 {sep}:0",
                pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                special_tokens=[(cls, cls_id), (sep, sep_id)],
            ),
        )
        plain = model["continuing_subword_prefix"] == "##" and model["max_input_chars_per_word"] == 100
        plain = plain and model["unk_token"] == str(tokenizer.unk_token)
        if plain and _same_pipeline(backend, built):
            return "BertTokenizerFast", settings
    return "PreTrainedTokenizerFast", {}


def save_tokenizer(tokenizer, folder: str | Path) -> Path:
    """`tokenizer.save_pretrained(folder)`, with a tokenizer_config.json that transformers 4.x and 5.x both
    load into the same tokenizer (the same ids); returns the folder. Every course function that saves a
    tokenizer saves it through this one.

    transformers 5 writes `"tokenizer_class": "TokenizersBackend"`, a class 4.x does not have; its list of extra
    special tokens under "extra_special_tokens", which 4.x reads as a mapping (and fails); and keys about how
    the tokenizer was loaded (`is_local`, `local_files_only`, `backend`). Here the class is `portable_class`'s,
    with the settings that make both versions build this tokenizer; the extra special tokens go under
    "additional_special_tokens", which both read; the loading keys go."""
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    path = folder / "tokenizer_config.json"
    config = {key: value for key, value in json.loads(path.read_text()).items() if key not in LOADING_KEYS}
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, dict) and extra:  # named extra tokens ({"image_token": ...}): both versions read a mapping
        config["extra_special_tokens"] = extra
    elif extra:
        config.setdefault("additional_special_tokens", list(extra))
    name, settings = portable_class(tokenizer)
    config.update(settings, tokenizer_class=name, model_input_names=MODEL_INPUT_NAMES)
    config["clean_up_tokenization_spaces"] = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return folder


def fertility(tokenizer, texts: Iterable[str]) -> float:
    """Tokens per whitespace word over `texts`, special tokens not counted."""
    texts = list(texts)
    words = sum(len(t.split()) for t in texts)
    if words == 0:
        raise ValueError("fertility needs at least one word of text")
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # no warning on long texts
    return sum(len(x) for x in ids) / words
