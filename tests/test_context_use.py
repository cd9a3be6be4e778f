"""course_lib.model.attention_window: attention limited to the tokens at most k positions away, at eval time
(an int window in every layer; a tuple, one per layer; `reach(model, k)`, exactly k tokens a side)."""

import pytest
import torch

from course_lib import model as M
from course_lib import training

PAD = 1


def tiny(position="learned", num_layers=2, seed=0):
    torch.manual_seed(seed)
    config = M.EncoderConfig(
        vocab_size=50,
        hidden_size=16,
        num_layers=num_layers,
        num_heads=2,
        intermediate_size=32,
        max_length=12,
        position=position,
        init_std=0.5,  # large weights: a token's effect through two layers is well above rounding
    )
    return M.EncoderForMaskedLM(config).eval()


def ids(seed=0, batch=2, seq=10):
    return torch.randint(5, 50, (batch, seq), generator=torch.Generator().manual_seed(seed))


def logits(model, input_ids, attention_mask=None, window=None):
    with torch.no_grad(), M.attention_window(model, window):
        return model(input_ids, attention_mask).logits


def changed(x, positions, seed=1):
    """`x` with new (non-special) tokens at `positions` of every row."""
    y = x.clone()
    g = torch.Generator().manual_seed(seed)
    for p in positions:
        y[:, p] = (x[:, p] - 5 + torch.randint(1, 45, (x.shape[0],), generator=g)) % 45 + 5  # never the same id
    return y


@pytest.mark.parametrize("position", M.POSITIONS)
def test_a_window_wider_than_the_sequence_changes_nothing(position):
    model, x = tiny(position), ids()
    mask = torch.ones_like(x)
    mask[1, 6:] = 0
    x[1, 6:] = PAD
    for attention_mask in (None, mask):
        plain = logits(model, x, attention_mask)
        wide = logits(model, x, attention_mask, window=x.shape[1])
        real = torch.ones_like(x, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        torch.testing.assert_close(wide[real], plain[real], rtol=0, atol=1e-6)
    assert model.attention_window is None


@pytest.mark.parametrize("position", M.POSITIONS)
def test_window_zero_leaves_every_token_on_its_own(position):
    model, x = tiny(position), ids()
    before = logits(model, x, window=0)
    for i in (0, 4, 9):
        after = logits(model, changed(x, [j for j in range(x.shape[1]) if j != i]), window=0)
        torch.testing.assert_close(after[:, i], before[:, i], rtol=0, atol=1e-5)
    assert not torch.allclose(logits(model, changed(x, [3])), logits(model, x))  # without the window, it matters


@pytest.mark.parametrize("position", M.POSITIONS)
def test_window_one_reaches_one_token_a_side_per_layer(position):
    x, i = ids(), 5
    one_layer = tiny(position, num_layers=1)
    before = logits(one_layer, x, window=1)
    for j in (i - 1, i + 1):
        assert not torch.allclose(logits(one_layer, changed(x, [j]), window=1)[:, i], before[:, i], atol=1e-4)
    far = changed(x, [j for j in range(x.shape[1]) if abs(j - i) > 1])
    torch.testing.assert_close(logits(one_layer, far, window=1)[:, i], before[:, i], rtol=0, atol=1e-5)
    # the window holds in every layer, so L layers reach L tokens a side: i + 1 saw i + 2 in the layer below
    two_layers = tiny(position, num_layers=2)
    before = logits(two_layers, x, window=1)
    assert not torch.allclose(logits(two_layers, changed(x, [i + 2]), window=1)[:, i], before[:, i], atol=1e-4)
    far = changed(x, [j for j in range(x.shape[1]) if abs(j - i) > 2])
    torch.testing.assert_close(logits(two_layers, far, window=1)[:, i], before[:, i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("position", M.POSITIONS)
def test_attention_weights_stay_inside_the_window(position):
    model, x = tiny(position), ids()
    with M.attention_window(model, 2):
        weights = M.attention_weights(model, x)
    far = (torch.arange(10)[:, None] - torch.arange(10)[None, :]).abs() > 2
    assert all(float(w[..., far].abs().max()) == 0 for w in weights)


@pytest.mark.parametrize("position", M.POSITIONS)
@pytest.mark.parametrize("window", [0, 1, 3])
def test_padding_is_still_masked_inside_the_window(position, window):
    model = tiny(position)
    short = ids(seq=6)
    padded = torch.cat([short, torch.full((2, 4), PAD)], 1)
    mask = (padded != PAD).long()
    expected = logits(model, short, window=window)
    got = logits(model, padded, mask, window=window)
    torch.testing.assert_close(got[:, :6], expected, rtol=0, atol=1e-5)
    with M.attention_window(model, window):  # a padded query with no real key in reach must not give NaN
        assert all(bool(torch.isfinite(w).all()) for w in M.attention_weights(model, padded, mask))


def test_the_context_manager_restores_the_window_even_after_an_error():
    model = tiny()
    assert model.attention_window is None and "attention_window" not in model.config.to_dict()
    with M.attention_window(model, 3) as same:
        assert same is model and model.attention_window == 3
        with M.attention_window(model, 0):
            assert model.attention_window == 0
        assert model.attention_window == 3
    assert model.attention_window is None
    with pytest.raises(RuntimeError, match="inside"), M.attention_window(model, 1):
        raise RuntimeError("inside")
    assert model.attention_window is None
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="integer >= 0"), M.attention_window(model, bad):
            pass
        assert model.attention_window is None
    assert "attention_window" not in model.state_dict()
    assert "attention_window" not in M.roberta_config(model.config).to_dict()


def test_evaluate_under_a_window():
    model = tiny()
    x = ids(batch=4)
    labels = torch.full_like(x, -100)
    labels[:, 3] = x[:, 3]
    data = [{"input_ids": changed(x, [3]), "attention_mask": torch.ones_like(x), "labels": labels}]
    plain = training.evaluate(model, data)["loss"]
    with M.attention_window(model, 20):
        assert training.evaluate(model, data)["loss"] == pytest.approx(plain, abs=1e-5)
    with M.attention_window(model, 0):
        assert training.evaluate(model, data)["loss"] != pytest.approx(plain, abs=1e-5)


# --------------------------------------------------------------------------- one window per layer, `reach`
@pytest.mark.parametrize("position", M.POSITIONS)
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("k", [1, 2])
def test_reach_sees_exactly_k_tokens_a_side(position, num_layers, k):
    model, x, i = tiny(position, num_layers=num_layers), ids(), 5
    window = M.reach(model, k)
    assert window == (k,) + (0,) * (num_layers - 1) == M.reach(num_layers, k)
    before = logits(model, x, window=window)
    for j in (i - k, i + k):  # the edge of the reach matters
        assert not torch.allclose(logits(model, changed(x, [j]), window=window)[:, i], before[:, i], atol=1e-4)
    for j in (i - k - 1, i + k + 1):  # one step beyond it does not, on its own or with everything further out
        torch.testing.assert_close(logits(model, changed(x, [j]), window=window)[:, i], before[:, i], rtol=0, atol=1e-5)
    far = changed(x, [j for j in range(x.shape[1]) if abs(j - i) > k])
    torch.testing.assert_close(logits(model, far, window=window)[:, i], before[:, i], rtol=0, atol=1e-5)
    # the int window k holds in every layer and reaches further: i + k + 1 matters there
    assert not torch.allclose(logits(model, changed(x, [i + k + 1]), window=k)[:, i], logits(model, x, window=k)[:, i])


@pytest.mark.parametrize("position", M.POSITIONS)
def test_per_layer_windows_of_none_or_all_equal_match_the_plain_forms(position):
    model, x = tiny(position, num_layers=3), ids()
    mask = torch.ones_like(x)
    mask[1, 6:] = 0
    x[1, 6:] = PAD
    for attention_mask in (None, mask):
        plain = logits(model, x, attention_mask)
        assert torch.equal(logits(model, x, attention_mask, window=(None, None, None)), plain)
        assert torch.equal(logits(model, x, attention_mask, window=[None] * 3), plain)
        assert torch.equal(logits(model, x, attention_mask, window=(2, 2, 2)), logits(model, x, attention_mask, 2))
    # a layer without a window attends to everything: then i + 4 reaches i again
    window = (1, None, 0)
    before = logits(model, x, window=window)
    assert not torch.allclose(logits(model, changed(x, [9]), window=window)[:, 5], before[:, 5], atol=1e-4)


@pytest.mark.parametrize("position", M.POSITIONS)
def test_attention_weights_follow_each_layers_window(position):
    model, x = tiny(position, num_layers=3), ids()
    with M.attention_window(model, M.reach(model, 2)):
        first, *later = M.attention_weights(model, x)
    distance = (torch.arange(10)[:, None] - torch.arange(10)[None, :]).abs()
    assert float(first[..., distance > 2].abs().max()) == 0 and float(first[..., distance == 2].min()) > 0
    for w in later:
        torch.testing.assert_close(w, torch.eye(10).expand_as(w), rtol=0, atol=0)


@pytest.mark.parametrize("window, distinct", [(1, 1), ((1, 0, 0), 2), ((2, None, 2), 1), ((None,) * 3, 0)])
def test_each_distinct_band_is_built_once_per_forward(monkeypatch, window, distinct):
    model, x = tiny(num_layers=3), ids()
    built = []
    real = M.window_mask

    def counting(seq_len, w, *args, **kwargs):
        if seq_len > 1:  # (the context manager checks a window with seq_len=1)
            built.append(w)
        return real(seq_len, w, *args, **kwargs)

    monkeypatch.setattr(M, "window_mask", counting)
    logits(model, x, window=window)
    assert len(built) == len(set(built)) == distinct


def test_a_per_layer_window_of_the_wrong_length_or_with_a_bad_entry_raises():
    model = tiny(num_layers=2)
    for bad in ((1,), (1, 0, 0), []):
        with pytest.raises(ValueError, match=rf"has {len(bad)} entries, the model 2 layers"):
            with M.attention_window(model, bad):
                pass
        assert model.attention_window is None
    for bad in ((1, -1), (0, 1.5), (True, 0), "ab"):
        with pytest.raises(ValueError, match="integer >= 0"), M.attention_window(model, bad):
            pass
    model.attention_window = M.reach(3, 1)  # set by hand, past the context manager: the forward pass checks
    with pytest.raises(ValueError, match="3 entries, the model 2 layers"):
        model(ids())
    model.attention_window = None
    with M.attention_window(model, [1, None]) as same:
        assert same.attention_window == (1, None)
    assert model.attention_window is None
    for bad in (0, -1, 1.0, True):
        with pytest.raises(ValueError, match="number of layers"):
            M.reach(bad, 1)
    with pytest.raises(ValueError, match="integer >= 0"):
        M.reach(model, -1)
