"""Every checker passes the reference and fails wrong code: at least one wrong implementation per exercise.
The wrong ones run with `first_failure=True`: the checker stops at the first case that fails."""

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from course_lib import baselines, checks
from course_lib import tokenization as tk
from course_lib.checks.framework import expect_same_losses

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


@pytest.mark.parametrize(
    "wrong",
    [alphabetical_ties, first_seen_ties, unweighted, across_words, counts_merges_not_tokens, alphabet_by_frequency],
)
def test_wrong_train_bpe_fails(wrong, capsys):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 1.1 failed \d of 6 checks"):
        checks.check_train_bpe(wrong, first_failure=True)
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


def test_a_crash_in_the_students_code_shows_their_line():
    """The message names the student's own function, line and source, not the checker's or a library's."""

    def train_bpe(word_counts, vocab_size):
        counts = sorted(word_counts.values())
        return counts[0] / (len(counts) - len(counts))  # ZeroDivisionError here

    line = train_bpe.__code__.co_firstlineno + 2
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_train_bpe(train_bpe, first_failure=True)
    message = str(info.value)
    assert "ZeroDivisionError" in message
    assert f"(in train_bpe, line {line}: `return counts[0] / (len(counts) - len(counts))" in message


def test_a_crash_inside_a_library_points_at_the_students_call():
    """A crash deep in torch is reported at the last line of the student's code that led to it."""

    def mask_tokens(input_ids, special_mask, **kwargs):
        return torch.zeros(3) @ torch.zeros(4), None  # a shape error raised inside torch

    with pytest.raises(checks.CheckFailed) as info:
        checks.check_mask_tokens(mask_tokens, first_failure=True)
    assert "(in mask_tokens, line" in str(info.value) and "torch.zeros(3) @ torch.zeros(4)" in str(info.value)


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
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
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
        checks.check_bpe_encode_word(wrong, first_failure=True)


def test_failure_message_names_the_case_and_the_difference():
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_bpe_encode_word(characters)
    message = str(info.value)
    assert "earliest-learned merge first" in message and "got 'b', expected 'bc'" in message


# --------------------------------------------------------------------------- notebook 02

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from course_lib import masking, model  # noqa: E402


def masks_specials_too(input_ids, special_mask, **kwargs):
    return masking.mask_tokens(input_ids, torch.zeros_like(special_mask), **kwargs)


def modifies_its_input(input_ids, special_mask, **kwargs):
    inputs, labels = masking.mask_tokens(input_ids, special_mask, **kwargs)
    input_ids.copy_(inputs)
    return input_ids, labels


def labels_everywhere(input_ids, special_mask, **kwargs):
    inputs, _ = masking.mask_tokens(input_ids, special_mask, **kwargs)
    return inputs, input_ids.clone()


def always_mask(
    input_ids,
    special_mask,
    *,
    mask_token_id,
    random_token_ids,
    mlm_probability=0.15,
    mask_replace_prob=0.8,
    random_replace_prob=0.1,
    generator=None,
):
    """Every selected token becomes <mask>: no random, no unchanged."""
    return masking.mask_tokens(
        input_ids,
        special_mask,
        mask_token_id=mask_token_id,
        random_token_ids=random_token_ids,
        mlm_probability=mlm_probability,
        mask_replace_prob=1.0,
        random_replace_prob=0.0,
        generator=generator,
    )


def random_from_whole_vocab(input_ids, special_mask, *, random_token_ids, **kwargs):
    return masking.mask_tokens(input_ids, special_mask, random_token_ids=torch.arange(0, 1000), **kwargs)


def ignores_generator(input_ids, special_mask, *, generator=None, **kwargs):
    return masking.mask_tokens(input_ids, special_mask, **kwargs)


def ignores_probability(input_ids, special_mask, *, mlm_probability=0.15, **kwargs):
    return masking.mask_tokens(input_ids, special_mask, **kwargs)


def test_reference_mask_tokens_passes(capsys):
    checks.check_mask_tokens(masking.mask_tokens)
    assert capsys.readouterr().out == "Exercise 2.1 passed: 8/8 checks\n"


@pytest.mark.parametrize(
    "wrong",
    [
        masks_specials_too,
        modifies_its_input,
        labels_everywhere,
        always_mask,
        random_from_whole_vocab,
        ignores_generator,
        ignores_probability,
    ],
)
def test_wrong_mask_tokens_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 2.1 failed \d of 8 checks"):
        checks.check_mask_tokens(wrong, first_failure=True)


def specials_from_ids(input_ids, special_mask, **kwargs):
    """Takes ids <= 2 as the special tokens instead of the mask it is given (<unk> and <mask> selectable)."""
    return masking.mask_tokens(input_ids, input_ids <= 2, **kwargs)


def test_special_tokens_taken_from_the_ids_pass_the_visible_cases_but_not_the_hidden_ones(capsys):
    checks.check_mask_tokens(specials_from_ids)  # the visible batch has its specials at ids 0-2 only
    assert capsys.readouterr().out == "Exercise 2.1 passed: 8/8 checks\n"
    with pytest.raises(checks.CheckFailed, match="hidden: special tokens at other ids") as info:
        checks.check_mask_tokens(specials_from_ids, hidden=True)
    assert "failed 1 of 11 checks" in str(info.value) and "not from the ids" in str(info.value)


def test_reference_mask_tokens_passes_the_hidden_cases(capsys):
    checks.check_mask_tokens(masking.mask_tokens, hidden=True)
    assert capsys.readouterr().out == "Exercise 2.1 passed: 8/8 checks, 3/3 hidden checks\n"


def token_level(word_ids, mlm_probability=0.15, generator=None):
    """Selects tokens, not words."""
    return (torch.rand(word_ids.shape, generator=generator) < mlm_probability) & (word_ids >= 0)


def same_words_in_every_row(word_ids, mlm_probability=0.15, generator=None):
    """One draw per word index, shared by all sentences of the batch."""
    chosen = torch.rand(int(word_ids.max()) + 1, generator=generator) < mlm_probability
    return chosen[word_ids.clamp(min=0)] & (word_ids >= 0)


def selects_specials(word_ids, mlm_probability=0.15, generator=None):
    n = int(word_ids.max()) + 2
    chosen = torch.rand(word_ids.shape[0], n, generator=generator) < mlm_probability
    return chosen.gather(1, word_ids + 1)


def test_reference_whole_word_mask_passes(capsys):
    checks.check_whole_word_mask(masking.whole_word_mask)
    assert capsys.readouterr().out == "Exercise 2.2 passed: 6/6 checks\n"


@pytest.mark.parametrize("wrong", [token_level, same_words_in_every_row, selects_specials])
def test_wrong_whole_word_mask_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 2.2 failed \d of 6 checks"):
        checks.check_whole_word_mask(wrong, first_failure=True)


def pads_the_last_block(token_ids, block_size):
    return masking.pack_sequences(token_ids, block_size, drop_last=False)


def one_sentence_per_block(token_ids, block_size):
    rows = [torch.tensor(ids[:block_size]) for ids in token_ids]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=1)[:, :block_size]


def test_reference_pack_sequences_passes(capsys):
    checks.check_pack_sequences(masking.pack_sequences)
    assert capsys.readouterr().out == "Exercise 2.3 passed: 4/4 checks\n"


@pytest.mark.parametrize("wrong", [pads_the_last_block, one_sentence_per_block])
def test_wrong_pack_sequences_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 2.3 failed \d of 4 checks"):
        checks.check_pack_sequences(wrong, first_failure=True)


# --------------------------------------------------------------------------- notebook 03


def reference_attention(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def unscaled_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def unmasked_attention(q, k, v, mask=None):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v


def softmax_over_queries(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-2).nan_to_num() @ v


def test_reference_attention_passes(capsys):
    checks.check_attention(reference_attention)
    assert capsys.readouterr().out == "Exercise 3.1 passed: 5/5 checks\n"


@pytest.mark.parametrize("wrong", [unscaled_attention, unmasked_attention, softmax_over_queries])
def test_wrong_attention_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 3.1 failed \d of 5 checks"):
        checks.check_attention(wrong, first_failure=True)


class HeadsSplitWrongly(model.MultiHeadSelfAttention):
    """Splits [batch, seq, hidden] into heads without the transpose: mixes positions and heads."""

    def forward(self, x, mask=None):
        b, s, h = x.shape
        q, k, v = (t.reshape(b, self.num_heads, s, self.head_size) for t in (self.query(x), self.key(x), self.value(x)))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.reshape(b, s, h))


class NoOutputProjection(model.MultiHeadSelfAttention):
    def forward(self, x, mask=None):
        b, s, h = x.shape
        q, k, v = (
            t.view(b, s, self.num_heads, self.head_size).transpose(1, 2)
            for t in (self.query(x), self.key(x), self.value(x))
        )
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, s, h)


class IgnoresMask(model.MultiHeadSelfAttention):
    def forward(self, x, mask=None):
        return super().forward(x, None)


def test_reference_multi_head_attention_passes(capsys):
    checks.check_multi_head_attention(model.MultiHeadSelfAttention)
    assert capsys.readouterr().out == "Exercise 3.2 passed: 4/4 checks\n"


@pytest.mark.parametrize("wrong", [HeadsSplitWrongly, NoOutputProjection, IgnoresMask])
def test_wrong_multi_head_attention_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 3.2 failed \d of 4 checks"):
        checks.check_multi_head_attention(wrong, first_failure=True)


class PreNormBlock(model.EncoderBlock):
    def forward(self, x, mask=None):
        x = x + self.dropout(self.attention(self.attention_norm(x), mask))
        return x + self.feed_forward(self.feed_forward_norm(x))


class NoResidual(model.EncoderBlock):
    def forward(self, x, mask=None):
        x = self.attention_norm(self.dropout(self.attention(x, mask)))
        return self.feed_forward_norm(self.feed_forward(x))


class MaskDropped(model.EncoderBlock):
    def forward(self, x, mask=None):
        return super().forward(x, None)


def test_reference_encoder_block_passes(capsys):
    checks.check_encoder_block(model.EncoderBlock)
    assert capsys.readouterr().out == "Exercise 3.3 passed: 2/2 checks\n"


@pytest.mark.parametrize("wrong", [PreNormBlock, NoResidual, MaskDropped])
def test_wrong_encoder_block_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 3.3 failed \d of 2 checks"):
        checks.check_encoder_block(wrong, first_failure=True)


class TiedHead(nn.Module):
    def __init__(self, config, word_embeddings, untied=False, activation=F.gelu):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.word_embeddings = word_embeddings
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.activation = activation
        if untied:  # a copy: the head owns a vocab x hidden matrix of its own
            self.decoder = nn.Parameter(word_embeddings.weight.detach().clone())

    def forward(self, x):
        weight = self.decoder if hasattr(self, "decoder") else self.word_embeddings.weight
        return F.linear(self.layer_norm(self.activation(self.dense(x))), weight, self.bias)


def test_reference_style_head_passes(capsys):
    checks.check_mlm_head(TiedHead)
    assert capsys.readouterr().out == "Exercise 3.4 passed: 4/4 checks\n"


class HidingHead(TiedHead):
    """Untied (a decoder of its own), hidden from named_parameters and parameters, with a gradient that still
    reaches the embeddings (issue 26, finding 9: it passed every case before)."""

    def __init__(self, config, word_embeddings):
        super().__init__(config, word_embeddings, untied=True)

    def forward(self, x):
        weight = self.word_embeddings.weight
        weight = self.decoder + (weight - weight.detach())  # the decoder's values, the embeddings' gradient
        return F.linear(self.layer_norm(self.activation(self.dense(x))), weight, self.bias)

    def named_parameters(self, *args, **kwargs):
        return ((name, p) for name, p in super().named_parameters(*args, **kwargs) if name != "decoder")

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters())


@pytest.mark.parametrize(
    "wrong",
    [
        lambda config, emb: TiedHead(config, emb, untied=True),
        lambda config, emb: TiedHead(config, emb, activation=F.relu),
        HidingHead,
    ],
)
def test_wrong_mlm_head_fails(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 3.4 failed \d of 4 checks"):
        checks.check_mlm_head(wrong, first_failure=True)


def reference_rotate(x):
    from course_lib import model

    return model.apply_rotary(x, *model.rotary_tables(x.shape[-2], x.shape[-1]))


def test_reference_rotation_passes(capsys):
    checks.check_rotary(reference_rotate, hidden=True)
    assert capsys.readouterr().out == "Exercise 3.5 passed: 5/5 checks, 2/2 hidden checks\n"


def _angles(seq, d, base=10000.0, layout="pairs"):
    import torch

    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * theta
    return angles.repeat_interleave(2, -1) if layout == "pairs" else angles.repeat(1, 2)


def _rotate_half(x):  # GPT-NeoX / Llama layout: pair i is (x[i], x[i + d/2])
    import torch

    d = x.shape[-1]
    a = _angles(x.shape[-2], d, layout="halves")
    return x * a.cos().float() + torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1) * a.sin().float()


def _wrong_direction(x):  # turns the other way: (a, b) -> (a cos + b sin, b cos - a sin)
    import torch

    a = _angles(x.shape[-2], x.shape[-1])
    return x * a.cos().float() - torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2) * a.sin().float()


def _positions_from_one(x):  # the first token at position 1
    import torch

    a = _angles(x.shape[-2] + 1, x.shape[-1])[1:]
    return x * a.cos().float() + torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2) * a.sin().float()


def _float32_angles_only_up_to_64(x):  # special-cased: right for short inputs, no rotation past 64 positions
    out = reference_rotate(x)
    out[..., 64:, :] = x[..., 64:, :]
    return out


@pytest.mark.parametrize("wrong", [_rotate_half, _wrong_direction, _positions_from_one])
def test_wrong_rotations_fail(wrong):
    with pytest.raises(checks.CheckFailed, match=r"Exercise 3.5 failed \d of 5 checks"):
        checks.check_rotary(wrong, first_failure=True)


def test_a_rotation_special_cased_to_short_inputs_fails_the_hidden_cases(capsys):
    checks.check_rotary(_float32_angles_only_up_to_64)
    assert capsys.readouterr().out == "Exercise 3.5 passed: 5/5 checks\n"
    with pytest.raises(checks.CheckFailed, match=r"Exercise 3.5 failed 1 of 7 checks"):
        checks.check_rotary(_float32_angles_only_up_to_64, hidden=True)


# --------------------------------------------------------------------------- exercises 4.1-4.3: the training loop

import torch.nn.functional as F  # noqa: E402


def make_train_step(weighting="tokens", clip="before", schedule=True, zero=True, returns="total"):
    """A train_step written out as a student would, with one thing that can be done wrong."""

    def train_step(model, micro_batches, optimizer, scheduler, max_grad_norm=1.0):
        model.train()
        counts = [int((b["labels"] != -100).sum()) for b in micro_batches]
        total, loss_sum, last = sum(counts), 0.0, 0.0
        for batch, count in zip(micro_batches, counts):
            loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
            share = count / total if weighting == "tokens" else 1 / len(micro_batches)
            (loss * share).backward()
            loss_sum, last = loss_sum + loss.item() * share, loss.item()
        if clip == "before" and max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if clip == "after" and max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if schedule:
            scheduler.step()
        if zero:
            optimizer.zero_grad()
        return loss_sum if returns == "total" else last

    return train_step


def test_reference_style_train_step_passes(capsys):
    checks.check_train_step(make_train_step(), hidden=True)
    assert "4/4 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        dict(weighting="mean of means"),
        dict(clip="never"),
        dict(clip="after"),
        dict(schedule=False),
        dict(zero=False),
        dict(returns="last micro-batch"),
    ],
    ids=str,
)
def test_wrong_train_step_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_train_step(make_train_step(**wrong), first_failure=True)


def make_evaluate(weighting="tokens", eval_mode=True, restore=True, accuracy_over="masked"):
    def evaluate(model, batches):
        was = model.training
        model.train(not eval_mode)
        losses, correct, count, means = 0.0, 0, 0, []
        with torch.no_grad():
            for batch in batches:
                logits = model(batch["input_ids"], batch["attention_mask"]).logits
                where = batch["labels"] != -100
                loss = F.cross_entropy(logits[where], batch["labels"][where], reduction="sum")
                losses += loss.item()
                means.append(loss.item() / int(where.sum()))
                if accuracy_over == "masked":
                    correct += int((logits[where].argmax(-1) == batch["labels"][where]).sum())
                else:
                    correct += int((logits.argmax(-1) == batch["input_ids"]).sum())
                count += int(where.sum())
        if restore:
            model.train(was)
        loss = losses / count if weighting == "tokens" else sum(means) / len(means)
        return {"loss": loss, "ppl": math.exp(loss), "acc": correct / count}

    return evaluate


def test_reference_style_evaluate_passes(capsys):
    checks.check_evaluate(make_evaluate(), hidden=True)
    assert "3/3 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        dict(weighting="mean of means"),
        dict(eval_mode=False),
        dict(restore=False),
        dict(accuracy_over="everything"),
    ],
    ids=str,
)
def test_wrong_evaluate_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_evaluate(make_evaluate(**wrong), first_failure=True)


def make_checkpointing(atomic=True, keep=("model", "optimizer", "scheduler", "rng"), step_offset=0):
    import random

    def save_checkpoint(path, model, optimizer, scheduler, step):
        path = Path(path)
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }
        target = path.with_name(path.name + ".tmp") if atomic else path
        torch.save({k: v for k, v in state.items() if k in keep or k == "step"}, target)
        if atomic:
            target.replace(path)

    def load_checkpoint(path, model, optimizer, scheduler):
        state = torch.load(path, weights_only=False)
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            torch.set_rng_state(state["rng"]["torch"])
            random.setstate(state["rng"]["python"])
        return state["step"] + step_offset

    return save_checkpoint, load_checkpoint


def test_reference_style_checkpointing_passes(capsys):
    checks.check_checkpoint(*make_checkpointing(), hidden=True)
    assert "3/3 checks, 1/1 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        dict(atomic=False),
        dict(keep=("model", "optimizer", "scheduler")),
        dict(keep=("model", "optimizer", "rng")),
        dict(keep=("model", "scheduler", "rng")),
        dict(step_offset=1),
    ],
    ids=str,
)
def test_wrong_checkpointing_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_checkpoint(*make_checkpointing(**wrong), first_failure=True)


# --------------------------------------------------------------------------- exercise 4.4: the no-context baseline


def make_no_context_token_loss(rule="bayes", log="ln", per_token=True, normalise=True, drawable="random_ids", r="R"):
    """no_context_token_loss written out as a student would (the 0 / 0 of a shown special token left as nan),
    with one thing that can be done wrong."""

    def no_context_token_loss(unigram, visible, targets, *, mask_token_id, random_ids, keep_prob=0.1, random_prob=0.1):
        u = unigram.double()
        can_draw = torch.zeros(len(u), dtype=torch.bool)
        can_draw[random_ids if drawable == "random_ids" else slice(None)] = True
        R = len(random_ids) if r == "R" else len(u)
        share = random_prob / R * can_draw[visible].double()  # P(a random draw shows the visible token)
        if rule == "bayes":
            likelihood = keep_prob * (visible == targets).double() + share
        else:  # "kept or random": the original is either kept or replaced, as if a draw never gave it back
            likelihood = torch.where(visible == targets, keep_prob, share)
        evidence = keep_prob * u[visible] + share * u.sum() if normalise else 1.0
        p = torch.where(visible == mask_token_id, u[targets], u[targets] * likelihood / evidence)
        if rule == "unigram":
            p = u[targets]
        losses = -(torch.log2(p) if log == "log2" else torch.log(p))
        return losses if per_token else losses.mean()

    return no_context_token_loss


def test_reference_no_context_token_loss_passes(capsys):
    checks.check_no_context_token_loss(baselines.no_context_token_loss, hidden=True)
    checks.check_no_context_token_loss(make_no_context_token_loss(), hidden=True)
    assert capsys.readouterr().out == "Exercise 4.4 passed: 5/5 checks, 2/2 hidden checks\n" * 2


@pytest.mark.parametrize(
    "wrong, message",
    [
        (dict(rule="unigram"), "position 2 shows 5, kept, or drawn at random"),  # the kept/random rule ignored
        (dict(rule="kept or random"), "position 2 shows 5"),  # a random draw can give the original back
        (dict(log="log2"), "log base 2?"),
        (dict(per_token=False), "one loss per predicted position: not their mean"),
        (dict(normalise=False), "position 2 shows 5"),
        (dict(drawable="every id"), "position 0 shows 0, a special token"),  # special ids as random-replaceable
        (dict(r="V"), "position 2 shows 5"),  # R counted over the whole vocabulary
    ],
    ids=str,
)
def test_wrong_no_context_token_loss_fails(wrong, message):
    with pytest.raises(checks.CheckFailed, match=re.escape(message)):
        checks.check_no_context_token_loss(make_no_context_token_loss(**wrong), first_failure=True)


def test_no_context_token_loss_normalised_over_the_random_ids_only_fails_a_hidden_case(capsys):
    """P(shown t) sums over every original, not only over the ids random replacement draws: the two differ
    only when random_ids leaves out tokens the unigram gives probability (a hidden case)."""

    def over_random_ids(unigram, visible, targets, *, mask_token_id, random_ids, keep_prob=0.1, random_prob=0.1):
        u, drawable = unigram.double(), torch.zeros(len(unigram), dtype=torch.bool)
        drawable[random_ids] = True
        share = random_prob / len(random_ids) * drawable[visible].double()
        likelihood = keep_prob * (visible == targets).double() + share
        evidence = keep_prob * u[visible] + share * u[random_ids].sum()
        return -torch.log(torch.where(visible == mask_token_id, u[targets], u[targets] * likelihood / evidence))

    checks.check_no_context_token_loss(over_random_ids)
    assert capsys.readouterr().out == "Exercise 4.4 passed: 5/5 checks\n"
    with pytest.raises(checks.CheckFailed, match="hidden: <mask> is id 7, random replacement draws from a subset"):
        checks.check_no_context_token_loss(over_random_ids, hidden=True, first_failure=True)


# --------------------------------------------------------------------------- notebook 05


def reference_probabilities(counts, alpha):
    total = sum(counts.values())
    weights = {lang: (n / total) ** alpha for lang, n in counts.items()}
    return {lang: w / sum(weights.values()) for lang, w in weights.items()}


def unnormalised_probabilities(counts, alpha):
    total = sum(counts.values())
    return {lang: (n / total) ** alpha for lang, n in counts.items()}


def inverse_exponent_probabilities(counts, alpha):
    return reference_probabilities(counts, 1 / alpha if alpha else 1.0)


def linear_mix_probabilities(counts, alpha):  # alpha * q + (1 - alpha) * uniform: not the formula
    total = sum(counts.values())
    return {lang: alpha * n / total + (1 - alpha) / len(counts) for lang, n in counts.items()}


def test_reference_style_probabilities_pass(capsys):
    checks.check_language_probabilities(reference_probabilities, hidden=True)
    assert "5/5 checks, 2/2 hidden" in capsys.readouterr().out


def float32_probabilities(counts, alpha):
    """A correct answer computed in float32 (the statement does not ask for float64)."""
    n = np.array(list(counts.values()), dtype=np.float32)
    weights = n ** np.float32(alpha)
    return dict(zip(counts, weights / weights.sum()))


def test_a_float32_implementation_passes(capsys):
    checks.check_language_probabilities(float32_probabilities, hidden=True)
    assert "5/5 checks, 2/2 hidden" in capsys.readouterr().out


def test_probabilities_off_by_1e_5_fail():
    def slightly_off(counts, alpha):
        return {lang: p + 1e-5 for lang, p in reference_probabilities(counts, alpha).items()}

    with pytest.raises(checks.CheckFailed):
        checks.check_language_probabilities(slightly_off, first_failure=True)


@pytest.mark.parametrize(
    "wrong", [unnormalised_probabilities, inverse_exponent_probabilities, linear_mix_probabilities]
)
def test_wrong_probabilities_fail(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_language_probabilities(wrong, first_failure=True)


def make_language_batches(replacement=False, alpha_used=None, shuffle=True, reshuffle=True, seeded=True):
    def language_batches(sizes, batch_size, alpha, num_batches, seed=0):
        rng = np.random.default_rng(seed if seeded else None)
        probs = reference_probabilities(sizes, alpha if alpha_used is None else alpha_used)
        langs, left, batches = list(sizes), {lang: [] for lang in sizes}, []
        for _ in range(num_batches):
            lang = langs[rng.choice(len(langs), p=[probs[x] for x in langs])]
            if replacement:
                batches.append((lang, [int(i) for i in rng.integers(0, sizes[lang], batch_size)]))
                continue
            batch = []
            while len(batch) < batch_size:
                if not left[lang]:
                    if not shuffle:
                        left[lang] = list(range(sizes[lang]))[::-1]
                    elif reshuffle:
                        left[lang] = list(rng.permutation(sizes[lang]))
                    else:  # one shuffle, reused every epoch
                        left[lang] = list(np.random.default_rng(seed).permutation(sizes[lang]))
                batch.append(int(left[lang].pop()))
            batches.append((lang, batch))
        return batches

    return language_batches


def test_reference_style_language_batches_pass(capsys):
    checks.check_language_batches(make_language_batches(), hidden=True)
    assert "4/4 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [dict(replacement=True), dict(alpha_used=1.0), dict(shuffle=False), dict(reshuffle=False), dict(seeded=False)],
    ids=str,
)
def test_wrong_language_batches_fail(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_language_batches(make_language_batches(**wrong), first_failure=True)


# --------------------------------------------------------------------------- notebook 06


def make_freeze(enable_embeddings=True, bias=False, count_twice=False, check_tie=True):
    def freeze_all_but_embeddings(model):
        embeddings = model.get_input_embeddings().weight
        for param in model.parameters():
            if param is not embeddings or enable_embeddings:
                param.requires_grad_(param is embeddings)
        if bias:
            model.cls.predictions.bias.requires_grad_(True)
        if check_tie and model.get_output_embeddings().weight is not embeddings:
            raise ValueError("untied")
        params = model.named_parameters(remove_duplicate=not count_twice)
        return sum(p.numel() for _, p in params if p.requires_grad)

    return freeze_all_but_embeddings


def test_reference_style_freeze_passes(capsys):
    checks.check_freeze_all_but_embeddings(make_freeze(), hidden=True)
    assert "4/4 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong", [dict(enable_embeddings=False), dict(bias=True), dict(count_twice=True), dict(check_tie=False)], ids=str
)
def test_wrong_freeze_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_freeze_all_but_embeddings(make_freeze(**wrong), first_failure=True)


def make_new_matrix(copy_specials=True, copy_all=False, scale="source", detach=True, seeded=True, global_seed=False):
    import torch

    def new_embedding_matrix(source_weight, source_tokenizer, target_tokenizer, seed=0):
        source = source_weight.detach() if detach else source_weight
        generator = torch.Generator().manual_seed(seed) if seeded else None
        if global_seed:  # reseeds (and advances) torch's global generator instead
            torch.manual_seed(seed)
        std = source.std() if scale == "source" else 1.0
        if copy_all:
            weight = source[: len(target_tokenizer)].clone()
        else:
            weight = torch.randn(len(target_tokenizer), source.shape[1], generator=generator) * std
        if copy_specials:
            for i in target_tokenizer.all_special_ids:
                token = target_tokenizer.convert_ids_to_tokens(i)
                weight[i] = source[source_tokenizer.convert_tokens_to_ids(token)]
        return weight

    return new_embedding_matrix


def test_reference_style_new_matrix_passes(capsys):
    checks.check_new_embedding_matrix(make_new_matrix(), hidden=True)
    assert "3/3 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        dict(copy_specials=False),
        dict(copy_all=True),
        dict(scale="one"),
        dict(detach=False),
        dict(seeded=False),
        dict(seeded=False, global_seed=True),
    ],
    ids=str,
)
def test_wrong_new_matrix_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_new_embedding_matrix(make_new_matrix(**wrong), first_failure=True)


def make_run(copy_body=True, freeze=True, train=True):
    import copy

    from course_lib import masking, transfer

    def embedding_only_run(
        body,
        source_tokenizer,
        target_tokenizer,
        train_examples,
        eval_data,
        steps,
        lr,
        batch_size=32,
        seed=0,
        progress=False,
    ):
        model = copy.deepcopy(body) if copy_body else body
        weight = transfer.new_embedding_matrix(
            body.get_input_embeddings().weight, source_tokenizer, target_tokenizer, seed
        )
        transfer.swap_embeddings(model, weight)
        if freeze:
            transfer.freeze_all_but_embeddings(model)
        if not train:  # a made-up history, going down, and no training (issue 26, finding 9)
            return model, [{"step": i, "loss": 6.0 - i} for i in range(3)]
        history = transfer.train_mlm(
            model,
            train_examples,
            masking.MLMCollator(target_tokenizer, seed=seed),
            eval_data,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
        )
        return model, history

    return embedding_only_run


def test_reference_style_run_passes(capsys):
    checks.check_embedding_only_run(make_run(), hidden=True)
    assert "2/2 checks, 1/1 hidden" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [dict(copy_body=False), dict(freeze=False), dict(train=False)], ids=str)
def test_wrong_run_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_embedding_only_run(make_run(**wrong), first_failure=True)


# --------------------------------------------------------------------------- notebook 07


def make_ds_config_fn(world=True, bf16_as_fp16=False, offload_at_zero=False, stage_ignored=False, check_precision=True):
    def make_ds_config(
        micro_batch_size, grad_accum, world_size, precision="fp32", stage=0, offload_optimizer=False, max_grad_norm=1.0
    ):
        if check_precision and precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision={precision!r}")
        if offload_optimizer and stage == 0 and not offload_at_zero:
            raise ValueError("offload needs ZeRO 1-3")
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"stage={stage}")
        zero = {"stage": 0 if stage_ignored else stage}
        if offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        return {
            "train_batch_size": micro_batch_size * grad_accum * (world_size if world else 1),
            "train_micro_batch_size_per_gpu": micro_batch_size,
            "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": precision == "bf16" and not bf16_as_fp16},
            "fp16": {"enabled": precision == "fp16" or (precision == "bf16" and bf16_as_fp16)},
        }

    return make_ds_config


def test_reference_style_ds_config_passes(capsys):
    checks.check_make_ds_config(make_ds_config_fn(), hidden=True)
    assert "5/5 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        dict(world=False),
        dict(bf16_as_fp16=True),
        dict(offload_at_zero=True),
        dict(stage_ignored=True),
        dict(check_precision=False),
    ],
    ids=str,
)
def test_wrong_ds_config_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_make_ds_config(make_ds_config_fn(**wrong), first_failure=True)


def make_ds_step(backward="engine", scale_wrt_gas=False, step_each=True, weighted=True):
    def ds_train_step(engine, micro_batches):
        engine.train()
        counts = [int((b["labels"] != -100).sum()) for b in micro_batches]
        total, value = sum(counts), 0.0
        for batch, count in zip(micro_batches, counts):
            out = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            loss = out.loss * (count / total) if weighted else out.loss / len(micro_batches)
            if backward == "engine":
                engine.backward(loss, scale_wrt_gas=scale_wrt_gas)
            else:
                loss.backward()
            if step_each:
                engine.step()
            value += loss.item()
        if not step_each:
            engine.step()
        return value

    return ds_train_step


def test_reference_style_ds_step_passes(capsys):
    checks.check_ds_train_step(make_ds_step(), hidden=True)
    assert "3/3 checks, 2/2 hidden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong", [dict(backward="tensor"), dict(scale_wrt_gas=True), dict(step_each=False), dict(weighted=False)], ids=str
)
def test_wrong_ds_step_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_ds_train_step(make_ds_step(**wrong), first_failure=True)


def make_ds_checkpoint(rng=True, optimizer=True, data=True):
    from pathlib import Path

    from course_lib import training

    def save_ds_checkpoint(engine, folder, step, data_state):
        client = {
            "step": step,
            **({"data": data_state} if data else {}),
            **({"rng": training.rng_state()} if rng else {}),
        }
        engine.save_checkpoint(str(folder), tag=f"step-{step}", client_state=client)
        return Path(folder) / f"step-{step}"

    def load_ds_checkpoint(engine, path):
        path = Path(path)
        _, client = engine.load_checkpoint(str(path.parent), tag=path.name, load_optimizer_states=optimizer)
        if "rng" in client:
            training.set_rng_state(client["rng"])
        return client

    return save_ds_checkpoint, load_ds_checkpoint


def test_reference_style_ds_checkpoint_passes(capsys):
    checks.check_ds_checkpoint(*make_ds_checkpoint(), hidden=True)
    assert "2/2 checks, 1/1 hidden" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [dict(rng=False), dict(optimizer=False), dict(data=False)], ids=str)
def test_wrong_ds_checkpoint_fails(wrong):
    with pytest.raises(checks.CheckFailed):
        checks.check_ds_checkpoint(*make_ds_checkpoint(**wrong), first_failure=True)


def test_a_resumed_run_that_stops_short_is_named_not_a_crash():
    with pytest.raises(AssertionError, match="did not go on to the end"):
        expect_same_losses([1.0, 2.0], [1.0, 2.0, 3.0], before=3, suspects="the data position")
    with pytest.raises(AssertionError, match="the loss of step 5 is 5.0"):
        expect_same_losses([1.0, 5.0], [1.0, 2.0], before=3, suspects="the data position")


# --------------------------------------------------------------------------- claims a checker must not believe
# (issue 26, finding 9): each of these passed its checker before the checker read state through the objects' own
# tables, measured what it could, and compared state right after a load; each is a cheat or a plausible bug.


def test_module_parameters_sees_through_a_dict_that_hides_a_parameter():
    from course_lib.checks.framework import module_parameters

    class Hiding(dict):
        def items(self):
            return [(k, v) for k, v in dict.items(self) if k != "decoder"]

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(4, 4)
            self.decoder = nn.Parameter(torch.randn(10, 4))
            object.__setattr__(self, "_parameters", Hiding(self._parameters))

    head = Head()
    assert "decoder" not in dict(head.named_parameters())  # hidden from nn.Module's own method
    assert [name for name, _ in module_parameters(head)] == ["decoder", "dense.weight", "dense.bias"]


class FakedGradientHead(TiedHead):
    """Scores against detached embeddings and writes a gradient of its own onto them."""

    def forward(self, x):
        weight = self.word_embeddings.weight
        if torch.is_grad_enabled():
            weight.grad = torch.ones_like(weight)
        return F.linear(self.layer_norm(self.activation(self.dense(x))), weight.detach(), self.bias)


def test_a_head_that_fakes_the_embeddings_gradient_fails():
    with pytest.raises(checks.CheckFailed, match="the gradient that reached the word embeddings"):
        checks.check_mlm_head(FakedGradientHead, first_failure=True)


def test_an_evaluate_that_restores_only_the_top_flag_fails():
    from course_lib import training

    def evaluate(model, batches):  # leaves every submodule in eval mode: dropout off after it
        was = model.training
        model.eval()
        out = training.evaluate(model, batches)
        model.training = was
        return out

    with pytest.raises(checks.CheckFailed, match="left in eval mode"):
        checks.check_evaluate(evaluate, first_failure=True)


def test_a_checkpoint_that_replays_the_run_in_memory_fails(monkeypatch):
    from course_lib import training

    real, log = training.train_step, {}

    def replaying(model, batches, opt, sched, *args, **kwargs):
        if model is log.get("fresh"):  # the resumed run: the losses of the run that went on, replayed
            log["i"] += 1
            if log["i"] == len(log["losses"]):
                with torch.no_grad():
                    for p, q in zip(model.parameters(), log["model"].parameters()):
                        p.copy_(q)
            return {"loss": log["losses"][log["i"] - 1]}
        out = real(model, batches, opt, sched, *args, **kwargs)
        if model is log.get("model"):
            log["losses"].append(out["loss"])
        return out

    def save_checkpoint(path, model, optimizer, scheduler, step):  # saves nothing of use
        torch.save({"nothing": 0}, path)
        log.update(model=model, losses=[], fresh=None, i=0, step=step)
        monkeypatch.setattr(training, "train_step", replaying)

    def load_checkpoint(path, model, optimizer, scheduler):
        log["fresh"] = model
        return log["step"]

    with pytest.raises(checks.CheckFailed, match="right after load_checkpoint"):
        checks.check_checkpoint(save_checkpoint, load_checkpoint, first_failure=True)


def test_a_freeze_that_hides_the_trainable_parameters_fails():
    def freeze_all_but_embeddings(model):  # freezes nothing, and shows only the embeddings
        weight = model.get_input_embeddings().weight
        if model.get_output_embeddings().weight is not weight:
            raise ValueError("untied")
        weight.requires_grad_(True)
        model.named_parameters = lambda *args, **kwargs: iter([("bert.embeddings.word_embeddings.weight", weight)])
        return weight.numel()

    with pytest.raises(checks.CheckFailed, match="the word embeddings only"):
        checks.check_freeze_all_but_embeddings(freeze_all_but_embeddings, first_failure=True)


def test_a_deepspeed_checkpoint_that_replays_the_run_in_memory_fails(monkeypatch):
    from course_lib import distributed

    real, log = distributed.ds_train_step, {}

    def replaying(engine, batches):
        if engine is log.get("fresh"):  # the resumed run: the losses of the run that went on, replayed
            log["i"] += 1
            return {"loss": log["losses"][log["i"] - 1]}
        out = real(engine, batches)
        if engine is log.get("engine"):
            log["losses"].append(out["loss"])
        return out

    def save_ds_checkpoint(engine, folder, step, data_state):  # saves nothing of use
        log.update(engine=engine, losses=[], fresh=None, i=0, state={"step": step, "data": data_state})
        monkeypatch.setattr(distributed, "ds_train_step", replaying)
        return folder

    def load_ds_checkpoint(engine, path):
        log["fresh"] = engine
        return log["state"]

    with pytest.raises(checks.CheckFailed, match="right after load_ds_checkpoint"):
        checks.check_ds_checkpoint(save_ds_checkpoint, load_ds_checkpoint, first_failure=True)
