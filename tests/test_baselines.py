"""course_lib.baselines: the no-context and neighbour-count predictors, on data where the answers are known."""

import dataclasses
import math

import pytest
import torch

from course_lib import masking, training
from course_lib import model as M
from course_lib.baselines import (
    INPUT_GROUPS,
    LOSS_CAP,
    NgramCounts,
    input_status,
    loss_by_neighbours,
    model_token_losses,
    neighbour_status,
    no_context_token_loss,
)

SPECIAL = [0, 1, 2, 3, 4]  # <s>, <pad>, </s>, <unk>, <mask> as the course tokenizer numbers them
MASK, V = 4, 12


def fit(ids, **kwargs):
    return NgramCounts.fit(ids, vocab_size=V, special_ids=SPECIAL, mask_token_id=MASK, **kwargs)


def batch(inputs, labels):
    inputs = torch.tensor(inputs)
    return {"input_ids": inputs, "attention_mask": (inputs != 1).long(), "labels": torch.tensor(labels)}


def test_unigram_leaves_out_special_tokens():
    counts = fit(torch.tensor([[0, 5, 5, 6, 2], [0, 7, 5, 1, 1]]))
    assert counts.unigram.tolist() == pytest.approx([0, 0, 0, 0, 0, 0.6, 0.2, 0.2, 0, 0, 0, 0])


def test_no_context_at_mask_is_the_unigram_and_copies_visible_tokens():
    counts = fit(torch.tensor([[0, 5, 5, 6, 7, 2]]))  # u(5) = 0.5, u(6) = u(7) = 0.25
    # a <mask> whose answer is 6; a visible 7 that is the answer; a visible 5 whose answer was 6 (random)
    scores = counts.score([batch([[0, MASK, 7, 5, 2]], [[-100, 6, 7, 6, -100]])])
    R = V - len(SPECIAL)
    keep, rand = 0.1, 0.1 / R
    p_mask = 0.25
    p_kept = 0.25 * (keep + rand) / (0.25 * keep + rand)  # Bayes: original 7 given a visible 7
    p_random = 0.25 * rand / (0.5 * keep + rand)  # original 6 given a visible 5
    expected = -(math.log(p_mask) + math.log(p_kept) + math.log(p_random)) / 3
    assert scores["no_context_loss"] == pytest.approx(expected, rel=1e-9)
    assert scores["no_context_accuracy"] == pytest.approx(1 / 3)  # the mask answers 5 (commonest); 7 copied; 5 copied
    assert scores["tokens"] == 3


def test_neighbour_model_reads_both_sides():
    # 5 6 7 always in this order; 8 only after 9: the middle of 5 _ 7 must be 6, and of 9 _ 10 must be 8
    train = torch.tensor([[0, 5, 6, 7, 9, 8, 10, 2]] * 50)
    counts = fit(train, smoothing=0.01)
    eval_data = [batch([[0, 5, MASK, 7, 9, MASK, 10, 2]], [[-100, -100, 6, -100, -100, 8, -100, -100]])]
    scores = counts.score(eval_data)
    assert scores["neighbour_accuracy"] == 1.0 and scores["neighbour_loss"] < 0.01
    assert scores["no_context_loss"] == pytest.approx(math.log(6))  # six tokens, equally frequent
    # a masked neighbour gives no evidence on its side: the other side still decides
    one_side = counts.score([batch([[0, MASK, MASK, 7, 2]], [[-100, 5, 6, -100, -100]])])
    assert one_side["neighbour_accuracy"] == 1.0


def test_sentence_boundaries_are_context_but_never_answers():
    # 7 starts every sentence and 8 ends it; 5 and 6 sit in the middle
    train = torch.tensor([[0, 7, 5, 6, 8, 2]] * 30)
    counts = fit(train, smoothing=0.01)
    scores = counts.score([batch([[0, MASK, 5, 6, MASK, 2]], [[-100, 7, -100, -100, 8, -100]])])
    assert scores["neighbour_accuracy"] == 1.0  # read from <s> on the left and </s> on the right
    assert counts.unigram[[0, 2]].sum() == 0 and counts.context_unigram[[0, 2]].sum() > 0
    assert counts.context_unigram[[1, MASK]].sum() == 0  # padding and <mask> are never context


def test_smoothing_moves_the_neighbour_model_towards_the_unigram():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(5, V, (200, 16), generator=g)
    eval_ids = torch.randint(5, V, (20, 16), generator=g)
    masked = masking.fixed_eval_masks(list(eval_ids), _Tok(), seed=0)
    data = training.eval_batches(masked, 8, pad_token_id=1)
    heavy = fit(train, smoothing=1e7).score(data)
    assert heavy["neighbour_loss"] == pytest.approx(heavy["no_context_loss"], abs=1e-3)
    assert fit(train, smoothing=1.0).score(data)["neighbour_loss"] != pytest.approx(heavy["no_context_loss"], abs=1e-3)


class _Tok:
    """Just what fixed_eval_masks reads from a tokenizer."""

    all_special_ids = SPECIAL
    mask_token, mask_token_id = "<mask>", MASK
    pad_token, pad_token_id = "<pad>", 1

    def __len__(self):
        return V


def test_background_backs_off_for_unseen_tokens_with_witten_bell_weight():
    train = torch.tensor([[0, 5, 5, 6, 2]])  # N = 3 tokens of T = 2 types: lambda = 3 / 5
    plain, backed = fit(train), fit(train, background=torch.tensor([0, 0, 0, 0, 0] + [1.0] * 7))
    assert plain.unigram[7] == 0  # never seen: probability 0 without a back-off
    assert backed.unigram[7] == pytest.approx(0.4 / 7)
    assert backed.unigram[5] == pytest.approx(0.6 * 2 / 3 + 0.4 / 7)
    assert float(backed.unigram.sum()) == pytest.approx(1.0) and backed.unigram[:5].sum() == 0
    eval_data = [batch([[0, MASK, 2]], [[-100, 7, -100]])]
    assert plain.score(eval_data)["no_context_loss"] > 20  # log(1e-12): the count model cannot score it
    assert backed.score(eval_data)["no_context_loss"] == pytest.approx(-math.log(0.4 / 7))
    with pytest.raises(ValueError, match="background must hold 12"):
        fit(train, background=torch.ones(5))
    with pytest.raises(ValueError, match="no probability to any ordinary"):
        fit(train, background=torch.tensor([1.0] * 5 + [0.0] * 7))


def test_counts_with_big_vocabulary_stay_small():
    counts = NgramCounts.fit(
        torch.tensor([[0, 49_990, 6, 2]]), vocab_size=50_000, special_ids=SPECIAL, mask_token_id=MASK
    )
    assert counts.pair_keys.numel() == 3  # (<s>, 49990), (49990, 6), (6, </s>): not a 50,000 x 50,000 table


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="token id 20 is out of range for vocab_size=12"):
        fit(torch.tensor([[0, 20, 2]]))
    with pytest.raises(ValueError, match="no ordinary"):
        fit(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        NgramCounts.fit(torch.tensor([[5, 6]]))
    with pytest.raises(ValueError, match="no masked token"):
        fit(torch.tensor([[5, 6]])).score([batch([[5, 6]], [[-100, -100]])])


def test_fill_mask_with_a_real_tokenizer(english_train):
    from course_lib import tokenization

    texts = english_train[:3000]
    tok = tokenization.train_tokenizer(texts, vocab_size=800)
    blocks = masking.pack_sequences(tok(texts, verbose=False)["input_ids"], 64)
    counts = NgramCounts.fit(blocks, tok)
    examples = [("It was the <mask> time.", "first"), ("He said that <mask> was right.", "it")]
    result = counts.fill_mask(tok, examples)
    assert set(result) == {"top1", "top5", "answers", "distinct_answers"}
    assert len(result["answers"]) == 2 and 0 <= result["top1"] <= result["top5"] <= 1
    with pytest.raises(ValueError, match="exactly one <mask>"):
        counts.fill_mask(tok, [("no mask here", "x")])


# --------------------------------------------------------------------------- loss split by masked neighbours
def test_neighbour_status_counted_by_hand():
    first = batch(
        [[0, MASK, 7, MASK, MASK, 2], [MASK, 6, MASK, 1, 1, 1]],
        [[-100, 5, 6, 7, 8, -100], [5, 6, 7, -100, -100, -100]],
    )
    # row 0: <s> | 7 -> 0; <mask> | <mask> -> 2; 7 | <mask> -> 1; <mask> | </s> -> 1
    # row 1: nothing | 6 -> 0; <mask> | <mask> -> 2; 6 | <pad> -> 0 (a missing neighbour and padding are not masked)
    second = batch([[5, MASK]], [[9, 10]])  # 5's right neighbour is masked; the last token has no right one
    status = neighbour_status([first, second], MASK)
    assert status.tolist() == [0, 2, 1, 1, 0, 2, 0, 1, 0] and status.dtype == torch.long
    counts = fit(torch.tensor([[0, 5, 6, 7, 8, 9, 10, 2]]))
    losses = counts.token_losses([first, second])
    assert {name: len(v) for name, v in losses.items()} == {"no_context": 9, "neighbour": 9}
    assert neighbour_status([], MASK).tolist() == []
    # what the predicted position itself shows: row 0 <mask>, 7, <mask>, <mask>; row 1 <mask>, 6, <mask>; then 5, <mask>
    shown = input_status([first, second], MASK)
    assert shown.tolist() == [0, 1, 0, 0, 0, 1, 0, 1, 0] and shown.dtype == torch.long
    split = loss_by_neighbours(losses, shown, INPUT_GROUPS)
    assert list(split) == ["at <mask>", "visible", "all"] and split["visible"]["tokens"] == 3
    assert math.isclose(split["at <mask>"]["no_context"], float(losses["no_context"][shown == 0].mean()))


def test_loss_by_neighbours_groups_add_up():
    status = torch.tensor([0, 0, 1, 2, 1, 0])
    losses = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64), "b": torch.arange(6.0)}
    table = loss_by_neighbours(losses, status)
    assert list(table) == ["both visible", "one masked", "both masked", "all"]
    assert table["both visible"] == {"tokens": 3, "a": 3.0, "b": 2.0}
    assert table["one masked"] == {"tokens": 2, "a": 4.0, "b": 3.0}
    assert table["both masked"] == {"tokens": 1, "a": 4.0, "b": 3.0}
    assert table["all"] == {"tokens": 6, "a": 3.5, "b": 2.5}
    empty = loss_by_neighbours({"a": torch.ones(2)}, torch.tensor([0, 0]))["both masked"]
    assert empty["tokens"] == 0 and math.isnan(empty["a"])
    with pytest.raises(ValueError, match="losses\\['a'\\] has shape \\(5,\\)"):
        loss_by_neighbours({"a": torch.ones(5)}, status)


@pytest.fixture(scope="module")
def real_eval(english_train, english_valid):
    """A 1,000-token tokenizer and neighbour counts from 2,000 training sentences; 400 validation sentences
    on fixed eval masks, in padded batches; and the config of a tiny course model of that vocabulary."""
    from course_lib import tokenization

    texts = english_train[:2000]
    tok = tokenization.train_tokenizer(texts, vocab_size=1000)
    counts = NgramCounts.fit(masking.pack_sequences(tok(texts, verbose=False)["input_ids"], 64), tok)
    eval_ids = tok(english_valid[:400], verbose=False, truncation=True, max_length=64)["input_ids"]
    data = training.eval_batches(masking.fixed_eval_masks(eval_ids, tok, seed=0), 32, tok.pad_token_id)
    config = M.EncoderConfig(
        vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=64
    )
    return tok, counts, data, config


@pytest.mark.parametrize("masked_only", [False, True])
def test_model_token_losses_average_to_evaluate(real_eval, masked_only):
    tok, _, data, config = real_eval
    torch.manual_seed(0)
    model = M.EncoderForMaskedLM(dataclasses.replace(config, masked_only=masked_only))  # [n, V] or [b, s, V] logits
    status = neighbour_status(data, tok.mask_token_id)
    model.train()
    per_token = model_token_losses(model, data)
    assert model.training  # left in the mode it was in
    assert per_token.dtype == torch.float64 and len(per_token) == len(status)
    assert float(per_token.mean()) == pytest.approx(training.evaluate(model, data)["loss"], abs=1e-5)


def test_neighbour_counts_lose_their_context_when_the_neighbours_are_masked(real_eval):
    tok, counts, data, config = real_eval
    torch.manual_seed(0)
    losses = {**counts.token_losses(data), "model": model_token_losses(M.EncoderForMaskedLM(config), data)}
    status, scores = neighbour_status(data, tok.mask_token_id), counts.score(data)
    assert all(len(v) == len(status) == scores["tokens"] for v in losses.values())
    assert float(losses["no_context"].mean()) == pytest.approx(scores["no_context_loss"], abs=1e-9)
    assert float(losses["neighbour"].mean()) == pytest.approx(scores["neighbour_loss"], abs=1e-9)
    table = loss_by_neighbours(losses, status)
    assert table["both masked"]["tokens"] >= 10 and table["one masked"]["tokens"] > table["both masked"]["tokens"]
    assert table["both masked"]["neighbour"] > table["both visible"]["neighbour"] + 0.5
    groups = [table[g] for g in ("both visible", "one masked", "both masked")]
    assert sum(g["tokens"] for g in groups) == table["all"]["tokens"]
    for name in losses:
        weighted = sum(g[name] * g["tokens"] for g in groups) / table["all"]["tokens"]
        assert weighted == pytest.approx(table["all"][name], abs=1e-9)


# --------------------------------------------------------------------------- no_context_token_loss (exercise 4.4)
def test_no_context_token_loss_is_the_no_context_probabilities_token_by_token():
    """The closed form `score` averages agrees with the [n, V] posterior of `no_context_probs`, and a shown token
    that nothing can produce (a special one) has loss inf, which `score` caps at -ln 1e-12."""
    g = torch.Generator().manual_seed(0)
    counts = fit(torch.randint(5, V, (50, 16), generator=g))
    targets = torch.randint(5, V, (60,), generator=g)
    visible = torch.where(torch.rand(60, generator=g) < 0.5, MASK, torch.randint(5, V, (60,), generator=g))
    visible[:10] = targets[:10]
    losses = no_context_token_loss(counts.unigram, visible, targets, **counts.replacement_rule)
    probs = counts.no_context_probs(visible).gather(1, targets.unsqueeze(1)).squeeze(1)
    assert losses.dtype == torch.float64 and torch.allclose(losses, -torch.log(probs), rtol=1e-12, atol=0)
    labels = torch.cat([torch.full((60, 1), -100), targets.unsqueeze(1), torch.full((60, 1), -100)], 1)
    inputs = torch.cat([torch.zeros(60, 1, dtype=torch.long), visible.unsqueeze(1), torch.full((60, 1), 2)], 1)
    scores = counts.score([{"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": labels}])
    assert scores["no_context_loss"] == pytest.approx(float(losses.mean()), rel=1e-12)
    rule = counts.replacement_rule
    special = no_context_token_loss(counts.unigram, torch.tensor([0, 2]), torch.tensor([5, 6]), **rule)
    assert special.tolist() == [math.inf, math.inf] and LOSS_CAP == pytest.approx(-math.log(1e-12))
