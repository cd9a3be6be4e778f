"""Every checker passes the reference and fails wrong code: at least one wrong implementation per exercise."""

from collections import Counter

import pytest

from course_lib import checks
from course_lib import tokenization as tk

# --------------------------------------------------------------------------- exercise 1.1: train_bpe


def bpe_with_tie_rule(tie_key):
    """train_bpe with another rule for ties (the count still decides first)."""

    def train_bpe(word_counts, vocab_size):
        vocab = sorted({ch for w in word_counts for ch in w})
        words = {tuple(w): n for w, n in word_counts.items()}
        merges = []
        while len(vocab) < vocab_size:
            counts = Counter()
            for s, n in words.items():
                for p in zip(s, s[1:]):
                    counts[p] += n
            if not counts:
                break
            best = tie_key(counts, vocab)
            merges.append(best)
            if best[0] + best[1] not in vocab:
                vocab.append(best[0] + best[1])
            words = {tk.merge_pair(s, best): n for s, n in words.items()}
        return vocab, merges

    return train_bpe


alphabetical_ties = bpe_with_tie_rule(lambda c, v: min(c, key=lambda p: (-c[p], p)))
first_seen_ties = bpe_with_tie_rule(lambda c, v: c.most_common(1)[0][0])


def unweighted(word_counts, vocab_size):
    """Counts each distinct word once, ignoring how often it occurs."""
    return tk.train_bpe({w: 1 for w in word_counts}, vocab_size)


def across_words(word_counts, vocab_size):
    """Treats the corpus as one long string, so pairs span word boundaries."""
    text = "".join(w * n for w, n in sorted(word_counts.items()))
    return tk.train_bpe({text: 1}, vocab_size)


def counts_merges_not_tokens(word_counts, vocab_size):
    """Makes vocab_size merges instead of stopping at vocab_size tokens."""
    alphabet = len({ch for w in word_counts for ch in w})
    return tk.train_bpe(word_counts, vocab_size + alphabet)


def alphabet_by_frequency(word_counts, vocab_size):
    """Orders the first vocabulary by character frequency instead of code point."""
    vocab, merges = tk.train_bpe(word_counts, vocab_size)
    freq = Counter(ch for w, n in word_counts.items() for ch in w for _ in range(n))
    n_chars = len(freq)
    return sorted(vocab[:n_chars], key=lambda ch: (-freq[ch], ch)) + vocab[n_chars:], merges


def test_reference_train_bpe_passes(capsys):
    checks.check_train_bpe(tk.train_bpe)
    assert capsys.readouterr().out == "Exercise 1.1 passed: 6/6 checks\n"


@pytest.mark.parametrize("wrong", [alphabetical_ties, first_seen_ties, unweighted, across_words,
                                   counts_merges_not_tokens, alphabet_by_frequency])
def test_wrong_train_bpe_fails(wrong, capsys):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 1.1 failed \d of 6 checks"):
        checks.check_train_bpe(wrong)
    assert "passed" not in capsys.readouterr().out


def test_unwritten_exercise_says_not_implemented():
    def train_bpe(word_counts, vocab_size):
        raise NotImplementedError("Exercise 1.1: the BPE training loop")

    with pytest.raises(NotImplementedError, match="Exercise 1.1"):
        checks.check_train_bpe(train_bpe)


def test_a_crash_is_a_failed_check_with_its_message():
    def train_bpe(word_counts, vocab_size):
        return None

    with pytest.raises(checks.CheckFailed, match="TypeError"):
        checks.check_train_bpe(train_bpe)


# --------------------------------------------------------------------------- exercise 1.2: bpe_encode_word


def merges_in_reverse(word, merges):
    return tk.bpe_encode_word(word, merges[::-1])


def rightmost_first(word, merges):
    """On a tie between two occurrences of the same pair, merges the rightmost."""
    rank = {p: i for i, p in enumerate(merges)}
    symbols = list(word)
    while len(symbols) > 1:
        best, i = min((rank.get(p, len(rank)), -i) for i, p in enumerate(zip(symbols, symbols[1:])))
        if best == len(rank):
            break
        i = -i
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def longest_match(word, merges):
    """Greedy longest-prefix match against the vocabulary (WordPiece's way), not BPE."""
    vocab = {a + b for a, b in merges} | set(word)
    out, start = [], 0
    while start < len(word):
        end = len(word)
        while word[start:end] not in vocab:
            end -= 1
        out.append(word[start:end])
        start = end
    return out


def characters(word, merges):
    return list(word)


def test_reference_encode_passes(capsys):
    checks.check_bpe_encode_word(tk.bpe_encode_word)
    assert capsys.readouterr().out == "Exercise 1.2 passed: 5/5 checks\n"


@pytest.mark.parametrize("wrong", [merges_in_reverse, rightmost_first, longest_match, characters])
def test_wrong_encode_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 1.2 failed \d of 5 checks"):
        checks.check_bpe_encode_word(wrong)


def test_failure_message_names_the_case_and_the_difference():
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_bpe_encode_word(characters)
    message = str(info.value)
    assert "earliest-learned merge first" in message and "got 'b', expected 'bc'" in message
