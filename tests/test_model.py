"""course_lib.model: the from-scratch encoder against `transformers.RobertaForMaskedLM`."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, RobertaForMaskedLM, pipeline

from course_lib import model as M

PAD = 1
CONFIGS = {
    "tiny": M.EncoderConfig(
        vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=16
    ),
    "3-heads": M.EncoderConfig(
        vocab_size=150, hidden_size=48, num_layers=3, num_heads=3, intermediate_size=96, max_length=40
    ),
    "pad-0": M.EncoderConfig(
        vocab_size=60,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_length=8,
        pad_token_id=0,
        layer_norm_eps=1e-12,
    ),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds synchronisation, which is slow on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_batch(config, batch=4, seed=0):
    """Token ids with right padding of several lengths, one full row and one left-padded row; mask; labels."""
    g = torch.Generator().manual_seed(seed)
    n, pad = config.max_length, config.pad_token_id
    ids = torch.randint(pad + 1, config.vocab_size, (batch, n), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate([n, n // 2, 3]):
        mask[row, length:] = 0
    mask[batch - 1, : n // 3] = 0  # left padding
    ids[mask == 0] = pad
    labels = torch.where((torch.rand(batch, n, generator=g) < 0.3) & (mask == 1), ids, -100)
    labels[0, 0] = ids[0, 0]  # at least one label
    return ids, mask, labels


def hf_model(config, seed=0, scramble=False):
    """A random RobertaForMaskedLM; scramble=True also randomises biases and LayerNorms, so that a
    weight copied to the wrong place cannot hide behind HF's zero/one initialisation."""
    torch.manual_seed(seed)
    hf = RobertaForMaskedLM(M.roberta_config(config)).eval()
    if scramble:
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return hf


# --------------------------------------------------------------------------- parity with transformers
@pytest.mark.parametrize("scramble", [False, True], ids=["hf-init", "scrambled"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_logits_and_loss_as_roberta(name, scramble):
    config = CONFIGS[name]
    hf = hf_model(config, scramble=scramble)
    ours = M.from_roberta(hf).eval()
    ids, mask, labels = random_batch(config)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
        out = ours(ids, mask, labels)
        out_no_mask = ours(ids)
        theirs_no_mask = hf(input_ids=ids)
    assert out.logits.shape == (*ids.shape, config.vocab_size)
    torch.testing.assert_close(out.logits, theirs.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, theirs.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_no_mask.logits, theirs_no_mask.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny", "3-heads"])
def test_masked_only_gathers_the_labelled_positions(name):
    config = CONFIGS[name]
    hf = hf_model(config, scramble=True)
    full, masked = M.from_roberta(hf).eval(), M.from_roberta(hf, masked_only=True).eval()
    ids, mask, labels = random_batch(config, seed=1)
    a, b = full(ids, mask, labels), masked(ids, mask, labels)  # b: the chunked loss, no logits (a training step)
    where = labels != -100
    assert b.logits is None
    with torch.no_grad():  # evaluation: the labelled rows' logits
        logits = masked(ids, mask, labels).logits
    assert logits.shape == (int(where.sum()), config.vocab_size)
    torch.testing.assert_close(logits, a.logits[where], atol=1e-6, rtol=0)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=0)
    a.loss.backward(), b.loss.backward()  # and the same gradients
    for (name_a, pa), (_, pb) in zip(full.named_parameters(), masked.named_parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-6, rtol=1e-4, msg=name_a)
    assert masked(ids, mask).logits.shape == (*ids.shape, config.vocab_size)  # without labels: every position


def test_from_a_plain_roberta_config():
    """RobertaConfig's own defaults differ from real RoBERTa checkpoints: 2 token types, eps 1e-12."""
    from transformers import RobertaConfig

    config = RobertaConfig(
        vocab_size=80,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=22,
    )
    torch.manual_seed(0)
    hf = RobertaForMaskedLM(config).eval()
    ours = M.from_roberta(hf, dropout=0.0)
    assert (ours.config.max_length, ours.config.layer_norm_eps, ours.config.dropout) == (20, 1e-12, 0.0)
    ids, mask, _ = random_batch(ours.config)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0
        )
    config.hidden_act = "relu"
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        M.from_roberta(RobertaForMaskedLM(config))


def test_position_ids_follow_roberta():
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [1, 1, 0, 7, 2, 1]])
    assert M.position_ids(ids, 1).tolist() == [[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1]]
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    ids = torch.randint(0, 5, (6, 20))
    for pad in (0, 1, 3):
        assert torch.equal(M.position_ids(ids, pad), RobertaEmbeddings.create_position_ids_from_input_ids(ids, pad))


def test_parameter_counts():
    for config in [*CONFIGS.values(), M.EncoderConfig(), M.EncoderConfig(pre_norm=True, vocab_size=500)]:
        model = M.EncoderForMaskedLM(config)
        table = dict(M.parameter_table(model))
        assert sum(v for k, v in table.items() if k != "total") == table["total"] == model.num_parameters()
        assert table["word embeddings"] == config.vocab_size * config.hidden_size
        assert table["position embeddings"] == config.num_position_embeddings * config.hidden_size
        embeddings = (config.vocab_size + config.num_position_embeddings + 1) * config.hidden_size
        assert model.num_parameters(embeddings=False) == model.num_parameters() - embeddings
        if not config.pre_norm:
            assert model.num_parameters() == RobertaForMaskedLM(M.roberta_config(config)).num_parameters()


# --------------------------------------------------------------------------- export to transformers
@pytest.fixture(scope="module")
def tokenizer():
    from course_lib import data, tokenization

    return tokenization.train_tokenizer(data.english_sentences("train", limit=2000), vocab_size=600)


def test_export_loads_in_transformers_and_fill_mask(tmp_path, tokenizer):
    config = M.EncoderConfig(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    ours = M.EncoderForMaskedLM(config).eval()
    folder = M.export_pretrained(ours, tmp_path / "model", tokenizer)
    loaded = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True).eval()
    assert type(loaded) is RobertaForMaskedLM
    saved = json.loads((folder / "tokenizer_config.json").read_text())  # through tokenization.save_tokenizer
    assert saved["tokenizer_class"] == "RobertaTokenizerFast" and "is_local" not in saved  # transformers 4.x loads it
    batch = tokenizer(
        ["The cat sat on the <mask>.", "A longer sentence, with <mask> words in it."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = ours(batch["input_ids"], batch["attention_mask"]).logits
        torch.testing.assert_close(loaded(**batch).logits, expected, atol=1e-5, rtol=0)

    fill = pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cpu")
    predictions = fill("The cat sat on the <mask>.", top_k=3)
    assert len(predictions) == 3 and all({"token", "token_str", "score", "sequence"} <= set(p) for p in predictions)
    ids = tokenizer("The cat sat on the <mask>.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = ours(ids).logits[0, ids[0] == tokenizer.mask_token_id].softmax(-1)[0]
    top = probs.topk(3)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_to_roberta_round_trip():
    config = CONFIGS["3-heads"]
    ours = M.from_roberta(hf_model(config, scramble=True))
    back = M.from_roberta(M.to_roberta(ours))
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert back.config == ours.config


def test_load_roberta_state_dict_is_strict():
    config = CONFIGS["tiny"]
    state = hf_model(config).state_dict()
    bigger = M.EncoderForMaskedLM(dataclasses.replace(config, num_layers=3))
    with pytest.raises(ValueError, match=r"missing \['roberta.encoder.layer.2.attention.output.LayerNorm.bias'"):
        M.load_roberta_state_dict(bigger, state)
    with pytest.raises(ValueError, match=r"unexpected \['roberta.encoder.layer.1."):
        M.load_roberta_state_dict(M.EncoderForMaskedLM(dataclasses.replace(config, num_layers=1)), state)
    with pytest.raises(ValueError, match="position_embeddings.weight has shape"):
        M.load_roberta_state_dict(M.EncoderForMaskedLM(dataclasses.replace(config, max_length=20)), state)


# --------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_padding_does_not_change_real_positions(pre_norm):
    config = dataclasses.replace(CONFIGS["3-heads"], pre_norm=pre_norm)
    torch.manual_seed(0)
    model = M.EncoderForMaskedLM(config).eval()
    sentence = torch.randint(2, config.vocab_size, (1, 7))
    with torch.no_grad():
        alone = model(sentence).logits
        others = torch.randint(2, config.vocab_size, (2, 12))
        batch = torch.cat([F.pad(sentence, (0, 5), value=PAD), others])  # padded to the longest sentence
        mask = (batch != PAD).long()
        torch.testing.assert_close(model(batch, mask).logits[:1, :7], alone, atol=1e-5, rtol=0)
        right = F.pad(sentence, (0, 9), value=PAD)  # extra pad tokens on the right
        torch.testing.assert_close(model(right, (right != PAD).long()).logits[:, :7], alone, atol=1e-5, rtol=0)
        left = F.pad(sentence, (4, 0), value=PAD)  # and on the left: RoBERTa positions skip pads
        torch.testing.assert_close(model(left, (left != PAD).long()).logits[:, 4:], alone, atol=1e-5, rtol=0)


def test_no_padding_means_no_attention_mask(monkeypatch):
    seen = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: seen.append(k["attn_mask"]) or sdpa(*a, **k))
    model = M.EncoderForMaskedLM(CONFIGS["tiny"]).eval()
    ids, mask, _ = random_batch(CONFIGS["tiny"])
    model(ids), model(ids, torch.ones_like(ids))
    assert seen == [None] * 4
    model(ids, mask)
    assert seen[-1].dtype == torch.bool and seen[-1].shape == (ids.shape[0], 1, 1, ids.shape[1])


def test_tied_weights_get_gradients_from_both_uses():
    config = CONFIGS["tiny"]
    model = M.EncoderForMaskedLM(config)
    assert model.head.decoder.weight is model.word_embeddings.weight
    ids = torch.randint(2, 50, (2, 10))  # ids 50..99 never appear in the input...
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.word_embeddings.weight.grad[50:].abs().sum(-1).gt(0).all()  # ...but are scored by the decoder


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_overfits_a_tiny_batch(pre_norm):
    config = dataclasses.replace(CONFIGS["tiny"], pre_norm=pre_norm, masked_only=pre_norm)
    torch.manual_seed(0)
    model = M.EncoderForMaskedLM(config).train()
    ids, mask, labels = random_batch(config, batch=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(ids, mask, labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_dropout_only_in_training():
    model = M.EncoderForMaskedLM(CONFIGS["tiny"])
    ids = torch.randint(2, 100, (2, 16))
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_init_like_huggingface():
    model = M.EncoderForMaskedLM(M.EncoderConfig())
    assert model.word_embeddings.weight[PAD].abs().sum() == 0 and model.position_embeddings.weight[PAD].abs().sum() == 0
    assert abs(model.layers[0].feed_forward.up.weight.std().item() - 0.02) < 1e-3
    assert model.head.decoder.bias.abs().sum() == 0 and torch.equal(
        model.layers[1].attention_norm.weight, torch.ones(256)
    )


def test_config_dict_round_trip():
    config = M.EncoderConfig(vocab_size=500, pre_norm=True)
    assert M.EncoderConfig.from_dict(config.to_dict()) == config
    assert config.num_position_embeddings == 128 + 1 + 1
    with pytest.raises(ValueError, match=r"unknown EncoderConfig field\(s\) \['hidden'\]"):
        M.EncoderConfig.from_dict({"hidden": 3})


# --------------------------------------------------------------------------- errors
def test_input_errors():
    model = M.EncoderForMaskedLM(CONFIGS["tiny"])
    with pytest.raises(ValueError, match="17 tokens per sequence but config.max_length is 16"):
        model(torch.full((1, 17), 5))
    with pytest.raises(ValueError, match="token id 100 is out of range for vocab_size=100"):
        model(torch.tensor([[5, 100, 7]]))
    with pytest.raises(ValueError, match="token id -3 is out of range"):
        model(torch.tensor([[5, -3, 7]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\)"):
        model(torch.tensor([[5, 6, 7]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, seq\]"):
        model(torch.tensor([5, 6, 7]))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_size", 30, "hidden_size=30 is not divisible by num_heads=4"),
        ("num_layers", 0, "num_layers must be a positive integer, got 0"),
        ("vocab_size", 12.5, "vocab_size must be a positive integer, got 12.5"),
        ("pad_token_id", 100, "pad_token_id=100 must be a token id, 0 <= id < vocab_size=100"),
        ("dropout", 1.0, "dropout must be a probability in"),
        ("attention_dropout", -0.1, "attention_dropout must be a probability in"),
        ("layer_norm_eps", 0, "layer_norm_eps must be > 0"),
        ("masked_only", "yes", "masked_only must be True or False"),
    ],
)
def test_config_errors(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        dataclasses.replace(CONFIGS["tiny"], **{field: value})


def test_export_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="pre_norm=True has no RoBERTa equivalent"):
        M.export_pretrained(M.EncoderForMaskedLM(dataclasses.replace(CONFIGS["tiny"], pre_norm=True)), tmp_path)
    with pytest.raises(ValueError, match="the tokenizer has 600 tokens but the model's vocab_size is 100"):
        M.export_pretrained(M.EncoderForMaskedLM(CONFIGS["tiny"]), tmp_path, tokenizer)
    assert not any(tmp_path.iterdir())
