"""Rotary positions (`EncoderConfig(position="rotary")`) against `transformers.RoFormerForMaskedLM`."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_model import CONFIGS as LEARNED_CONFIGS
from test_model import one_thread, random_batch  # noqa: F401 (one_thread: an autouse fixture)
from transformers import AutoModelForMaskedLM, AutoTokenizer, RoFormerForMaskedLM, pipeline
from transformers.models.roformer.modeling_roformer import RoFormerSelfAttention, RoFormerSinusoidalPositionalEmbedding

from course_lib import model as M

PAD = 1
# the learned-position configs of test_model.py, with rotary positions
CONFIGS = {name: dataclasses.replace(config, position="rotary") for name, config in LEARNED_CONFIGS.items()}


def roformer(config, seed=0):
    """A random RoFormerForMaskedLM with biases and LayerNorms randomised too (no weight hides behind 0 or 1)."""
    torch.manual_seed(seed)
    hf = RoFormerForMaskedLM(M.roformer_config(config)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "embed_positions" not in name:
                p.add_(torch.randn_like(p) * 0.1)
    return hf


@pytest.mark.parametrize("seq", [1, 7, 64])
@pytest.mark.parametrize("head_size", [2, 8, 64])
def test_apply_rotary_is_transformers_rotation(seq, head_size):
    table = RoFormerSinusoidalPositionalEmbedding(seq, head_size)
    table.weight = torch.nn.Parameter(table.create_weight(), requires_grad=False)  # HF fills it in _init_weights
    sinusoid = table((1, seq))[None, None]  # [1, 1, seq, head]
    q, k = torch.randn(2, 3, seq, head_size), torch.randn(2, 3, seq, head_size)
    theirs_q, theirs_k = RoFormerSelfAttention.apply_rotary_position_embeddings(sinusoid, q, k)
    cos, sin = M.rotary_tables(seq, head_size)
    torch.testing.assert_close(M.apply_rotary(q, cos, sin), theirs_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(M.apply_rotary(k, cos, sin), theirs_k, atol=1e-6, rtol=0)


def test_rotary_scores_depend_on_the_distance_only():
    cos, sin = M.rotary_tables(20, 8)
    q, k = torch.randn(8), torch.randn(8)
    rq, rk = M.apply_rotary(q.expand(20, 8), cos, sin), M.apply_rotary(k.expand(20, 8), cos, sin)
    scores = rq @ rk.T  # [query position, key position]
    for shift in (1, 5):
        torch.testing.assert_close(scores.diagonal(shift)[:-1], scores.diagonal(shift)[1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(M.apply_rotary(q.expand(20, 8), cos, sin).norm(dim=-1), q.norm().expand(20))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_logits_and_loss_as_roformer(name):
    config = CONFIGS[name]
    hf = roformer(config)
    ours = M.from_roformer(hf).eval()
    ids, mask, labels = random_batch(config)
    with torch.no_grad():
        theirs, out = hf(input_ids=ids, attention_mask=mask, labels=labels), ours(ids, mask, labels)
        theirs_no_mask, out_no_mask = hf(input_ids=ids), ours(ids)
    real = mask.bool()  # padded query rows are never used; HF's eager attention fills them differently
    torch.testing.assert_close(out.logits[real], theirs.logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, theirs.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_no_mask.logits, theirs_no_mask.logits, atol=1e-5, rtol=0)


def test_roformer_round_trip_and_strict_loading():
    config = CONFIGS["3-heads"]
    ours = M.from_roformer(roformer(config))
    back = M.from_roformer(M.to_roformer(ours))
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert back.config == ours.config
    assert ours.position_embeddings is None and "position_embeddings.weight" not in ours.state_dict()
    state = roformer(config).state_dict()
    with pytest.raises(ValueError, match=r"missing \['roformer.encoder.layer.3"):
        M.load_roformer_state_dict(M.EncoderForMaskedLM(dataclasses.replace(config, num_layers=4)), state)
    with pytest.raises(ValueError, match="position='rotary'"):
        M.load_roformer_state_dict(M.EncoderForMaskedLM(dataclasses.replace(config, position="learned")), state)
    with pytest.raises(ValueError, match="RoBERTa has learned positions"):
        M.roberta_config(config)
    with pytest.raises(ValueError, match="RoFormer has rotary positions"):
        M.roformer_config(dataclasses.replace(config, position="learned"))


def test_bad_position_settings():
    with pytest.raises(ValueError, match="position='absolute': choose one of learned, rotary"):
        M.EncoderConfig(position="absolute")
    with pytest.raises(ValueError, match="head size .* = 3 must be even"):
        M.EncoderConfig(hidden_size=12, num_heads=4, position="rotary")
    with pytest.raises(ValueError, match="init_std must be > 0"):
        M.EncoderConfig(init_std=0)


def test_padding_and_packing_do_not_move_positions():
    config = CONFIGS["3-heads"]
    torch.manual_seed(0)
    model = M.EncoderForMaskedLM(config).eval()
    a, b = torch.randint(2, config.vocab_size, (1, 7)), torch.randint(2, config.vocab_size, (1, 5))
    with torch.no_grad():
        alone = model(a).logits
        padded = torch.cat([F.pad(a, (0, 5), value=PAD), torch.randint(2, config.vocab_size, (1, 12))])
        torch.testing.assert_close(model(padded, (padded != PAD).long()).logits[:1, :7], alone, atol=1e-5, rtol=0)
        left = F.pad(a, (4, 0), value=PAD)  # left padding shifts every position by 4: only differences matter
        torch.testing.assert_close(model(left, (left != PAD).long()).logits[:, 4:], alone, atol=1e-5, rtol=0)
        # a packed block: two texts side by side; the first sees the second (no mask between them) but stays finite
        packed = torch.cat([a, b], 1)
        assert torch.isfinite(model(packed).logits).all()
        # no position table: rows past the padding-free length are not special
        assert model.position_embeddings is None


def test_rotary_table_has_no_parameters():
    learned = M.EncoderForMaskedLM(dataclasses.replace(CONFIGS["tiny"], position="learned"))
    rotary = M.EncoderForMaskedLM(CONFIGS["tiny"])
    c = CONFIGS["tiny"]
    assert learned.num_parameters() - rotary.num_parameters() == c.num_position_embeddings * c.hidden_size
    assert rotary.num_parameters() == RoFormerForMaskedLM(M.roformer_config(c)).num_parameters() - c.max_length * (
        c.hidden_size // c.num_heads
    )  # RoFormer counts its fixed sinusoid table as a (frozen) parameter
    assert dict(M.parameter_table(rotary))["position embeddings"] == 0


@pytest.fixture(scope="module")
def tokenizer():
    from course_lib import data, tokenization

    return tokenization.train_tokenizer(data.english_sentences("train", limit=2000), vocab_size=600)


def test_export_loads_with_auto_classes_and_fill_mask(tmp_path, tokenizer):
    config = M.EncoderConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, position="rotary"
    )
    torch.manual_seed(0)
    ours = M.EncoderForMaskedLM(config).eval()
    folder = M.export_pretrained(ours, tmp_path / "model", tokenizer)
    loaded = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True).eval()
    assert type(loaded) is RoFormerForMaskedLM
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = ["The cat sat on the <mask>.", "A longer sentence, with <mask> words in it."]
    batch = loaded_tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == tokenizer(texts, padding=True, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        expected = ours(batch["input_ids"], batch["attention_mask"]).logits
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(loaded(**batch).logits[real], expected[real], atol=1e-5, rtol=0)
    fill = pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cpu")
    predictions = fill(texts[0], top_k=3)
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = ours(ids).logits[0, ids[0] == tokenizer.mask_token_id].softmax(-1)[0]
    top = probs.topk(3)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-5)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_attention_weights_are_transformers_attentions(position):
    from transformers import RobertaForMaskedLM

    config = dataclasses.replace(CONFIGS["tiny"], position=position)
    torch.manual_seed(1)
    ours = M.EncoderForMaskedLM(config).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # sharper attention than at initialisation
    hf = M.to_transformers(ours).eval()
    if position == "learned":  # sdpa returns no weights: the eager twin
        hf = RobertaForMaskedLM._from_config(hf.config, attn_implementation="eager")
        hf.load_state_dict(M.to_roberta(ours).state_dict())
        hf.eval()
    ids, mask, _ = random_batch(config)
    weights = M.attention_weights(ours, ids, mask)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert len(weights) == config.num_layers
    real = mask.bool()
    for w, t in zip(weights, theirs):
        assert w.shape == (ids.shape[0], config.num_heads, ids.shape[1], ids.shape[1])
        torch.testing.assert_close(w.permute(0, 2, 1, 3)[real], t.permute(0, 2, 1, 3)[real], atol=1e-5, rtol=0)
    assert ours.training is False


def test_neighbour_attention_measures_the_diagonals():
    seq = 6
    before = torch.diag(torch.ones(seq - 1), -1)  # query i looks at i - 1 ...
    before[0, 0] = 1.0  # ... and the first query at itself
    after = torch.diag(torch.ones(seq - 1), 1)
    after[-1, -1] = 1.0
    uniform = torch.full((seq, seq), 1 / seq)
    weights = torch.stack([before, after, uniform])[None]  # [1, 3 heads, seq, seq]
    shares = M.neighbour_attention(weights)
    torch.testing.assert_close(shares, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / seq, 1 / seq]]))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])  # pairs that touch padding do not count
    torch.testing.assert_close(M.neighbour_attention(weights, mask)[0], torch.tensor([1.0, 0.0]))
