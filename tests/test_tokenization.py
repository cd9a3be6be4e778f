"""course_lib.tokenization: the from-scratch BPE against `tokenizers`, and the course tokenizer."""

import random

import pytest

from course_lib import tokenization as tk


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

    course_tokenizer.save_pretrained(tmp_path)
    loaded = tk.load_tokenizer(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded(english_valid[:100])["input_ids"] == course_tokenizer(english_valid[:100])["input_ids"]
    assert loaded.mask_token == "<mask>" and loaded.model_max_length == 128


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
