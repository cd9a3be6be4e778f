"""course_lib.downstream (notebook 08): the genre task's splits, pooling, the probe against scikit-learn, TF-IDF,
fine-tuning through AutoModelForSequenceClassification, and the comparison of arms. Offline, small inputs."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from course_lib import downstream as D
from course_lib import model as M
from course_lib.paths import course_path

BROWN_SMALL = course_path("models", "brown-small")


@pytest.fixture(scope="module")
def splits():
    return D.genre_splits()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(BROWN_SMALL), local_files_only=True)


def tiny_course_model(vocab=8000, seed=0):
    torch.manual_seed(seed)
    config = M.EncoderConfig(
        vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=64,
        position="rotary", dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    return M.EncoderForMaskedLM(config).eval()


# --------------------------------------------------------------------------- the task and its splits


def test_no_brown_file_is_in_two_splits_and_every_genre_is_in_each(splits):
    files = {name: set(s.files) for name, s in splits.items()}
    assert not files["train"] & files["dev"] and not files["train"] & files["test"] and not files["dev"] & files["test"]
    assert (len(files["train"]), len(files["dev"]), len(files["test"])) == (405, 45, 50)
    assert sum(len(s) for s in splits.values()) == 51_538 + 5_621  # brown.train and brown.valid, every sentence
    for split in splits.values():
        assert set(split.genres) == set(D.GENRES)
        genre_of = {}
        for f, g in zip(split.files, split.genres):  # a file has one genre
            assert genre_of.setdefault(f, g) == g, f


def test_the_test_split_is_brown_valid_the_files_brown_small_never_saw(splits):
    from course_lib import data

    assert splits["test"].texts == [t for _, _, t in data.brown_rows("valid")]
    assert not set(splits["test"].files) & {f for f, _, _ in data.brown_rows("train")}


def test_labels_of_both_tasks():
    genres = ["news", "humor", "learned", "romance"]
    assert D.task_labels(genres, "genre").tolist() == [D.GENRES.index(g) for g in genres]
    assert D.task_labels(genres, "informative").tolist() == [0, 1, 0, 1]
    assert len(D.GENRES) == 15 and len(set(D.INFORMATIVE) | set(D.IMAGINATIVE)) == 15


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: D.task_labels(["news"], "sentiment"), "unknown task 'sentiment'"),
        (lambda: D.task_labels(["news", "poetry"]), r"unknown Brown genre\(s\) \['poetry'\]"),
        (lambda: D.draw(10, 11, 0), "cannot draw 11 labelled sentences from a pool of 10"),
        (lambda: D.draw(10, 0, 0), "cannot draw 0"),
        (lambda: D.genre_splits(dev_every=1), "dev_every=1"),
    ],
)
def test_bad_input_says_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_draws_are_nested_and_differ_between_seeds():
    small, large = D.draw(1000, 100, 3), D.draw(1000, 300, 3)
    assert small.tolist() == large[:100].tolist() and len(set(large.tolist())) == 300
    assert D.draw(1000, 100, 4).tolist() != small.tolist()


# --------------------------------------------------------------------------- pooling and features


def test_mean_pool_ignores_padding_wherever_it_is_and_whatever_it_holds():
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    pooled = D.mean_pool(hidden, mask)
    assert torch.allclose(pooled[0], hidden[0, :3].mean(0))
    assert torch.allclose(pooled[1], hidden[1, 2:].mean(0))
    assert torch.allclose(pooled[2], hidden[2].mean(0))
    garbage = torch.where(mask.bool().unsqueeze(-1), hidden, torch.full_like(hidden, 1e6))
    assert torch.allclose(D.mean_pool(garbage, mask), pooled)
    assert torch.allclose(D.mean_pool(hidden, mask.bool()), pooled)
    assert D.mean_pool(hidden, torch.zeros(3, 6)).abs().max() == 0  # no real token: zeros, not NaN


def test_features_follow_the_texts_order_and_do_not_depend_on_the_batch(tokenizer):
    model = D.random_like(AutoModelForSequenceClassification.from_config(_tiny_roformer_config()), seed=0)
    texts = ["A short one.", "A rather longer sentence, with a comma and more words in it.", "Mid length here."]
    together = D.sentence_features(model, tokenizer, texts, batch_size=8)
    alone = torch.cat([D.sentence_features(model, tokenizer, [t]) for t in texts])
    assert together.shape == (3, 32) and torch.allclose(together, alone, atol=1e-5)
    rows = D.sentence_features(model, tokenizer, texts, layer="embeddings")
    ids = tokenizer(texts[0])["input_ids"]
    assert torch.allclose(rows[0], model.get_input_embeddings().weight[ids].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="layer='middle'"):
        D.sentence_features(model, tokenizer, texts, layer="middle")


def _tiny_roformer_config(num_labels=3, positions=128):
    from transformers import RoFormerConfig

    return RoFormerConfig(
        vocab_size=8000, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=positions, pad_token_id=1, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip


def test_a_model_with_fewer_positions_gets_sentences_cut_to_them(tokenizer):
    """Notebook 04's model under `ci` has 64 positions: a longer sentence must be cut, not index past them."""
    model = AutoModelForSequenceClassification.from_config(_tiny_roformer_config(positions=16)).eval()
    long = " ".join(["word"] * 60)
    assert len(tokenizer(long)["input_ids"]) > 16
    features = D.sentence_features(model, tokenizer, [long, "short"])
    cut = tokenizer.decode(tokenizer(long, truncation=True, max_length=16)["input_ids"], skip_special_tokens=True)
    assert torch.allclose(features[0], D.sentence_features(model, tokenizer, [cut])[0], atol=1e-5)
    assert D.classify(model, tokenizer, [long]).shape == (1,)
    D.fine_tune(model, tokenizer, [long, "short"], [0, 1], steps=1, lr=1e-3)


def test_random_like_has_the_shape_and_new_weights_and_leaves_the_random_state_alone():
    model = tiny_course_model()
    hf = M.to_roformer(model)
    state = torch.random.get_rng_state()
    fresh = D.random_like(hf, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert type(fresh) is type(hf)
    theirs, ours = fresh.state_dict(), hf.state_dict()
    assert theirs.keys() == ours.keys() and all(theirs[k].shape == ours[k].shape for k in ours)
    name = "roformer.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(theirs[name], ours[name])
    assert torch.equal(D.random_like(hf, seed=1).state_dict()[name], theirs[name])


# --------------------------------------------------------------------------- the probe is scikit-learn's


def _toy(n=120, d=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, k)) + rng.gumbel(size=(n, k))).argmax(1)
    return x, y


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_the_probe_on_a_fixed_toy_input_matches_scikit_learn(C):
    x, y = _toy()
    probe, theirs = D.fit_probe(x, y, 4, C), D.sklearn_probe(x, y, C)
    assert np.abs(probe.predict_proba(torch.tensor(x)).numpy() - theirs.predict_proba(x)).max() < 1e-4
    assert np.abs(probe.weight.numpy() - theirs.coef_).max() < 1e-3
    assert np.abs(probe.bias.numpy() - theirs.intercept_).max() < 1e-3


def test_two_classes_scikit_learns_c_is_twice_the_probes():
    x, y = _toy(k=2, seed=1)
    probe, theirs = D.fit_probe(x, y, 2, 0.5), D.sklearn_probe(x, y, 1.0)
    assert np.abs(probe.predict_proba(torch.tensor(x)).numpy() - theirs.predict_proba(x)).max() < 1e-4


def test_a_class_without_labels_is_never_predicted_as_in_scikit_learn():
    x, y = _toy(k=3, seed=2)
    y = np.array([0, 2, 5])[y]  # classes 0, 2, 5 of 6
    probe, theirs = D.fit_probe(x, y, 6, 1.0), D.sklearn_probe(x, y, 1.0)
    p = probe.predict_proba(torch.tensor(x)).numpy()
    assert p[:, [1, 3, 4]].max() == 0
    assert np.abs(p[:, [0, 2, 5]] - theirs.predict_proba(x)).max() < 1e-4
    assert set(probe.predict(torch.tensor(x)).tolist()) <= {0, 2, 5}


def test_probe_objective_is_scikit_learns_divided_by_c_n():
    x, y = _toy(n=50)
    theirs = D.sklearn_probe(x, y, 2.0)
    w, b = torch.tensor(theirs.coef_), torch.tensor(theirs.intercept_)
    xt, yt = torch.tensor(x), torch.tensor(y)
    total = 2.0 * torch.nn.functional.cross_entropy(xt @ w.T + b, yt, reduction="sum") + 0.5 * (w**2).sum()
    assert math.isclose(D.probe_objective(w, b, xt, yt, 2.0).item(), total.item() / (2.0 * 50), rel_tol=1e-12)


def test_the_probe_says_what_is_wrong_with_its_input():
    with pytest.raises(ValueError, match=r"labels must be 0..2; got 0..3"):
        D.fit_probe(np.zeros((4, 2)), [0, 1, 2, 3], 3)
    with pytest.raises(ValueError, match=r"features must be \[n, d\]"):
        D.fit_probe(np.zeros(4), [0, 1, 0, 1], 2)


# --------------------------------------------------------------------------- choosing C, TF-IDF, scoring


def test_choose_c_takes_the_best_cross_validated_c_and_the_smaller_on_a_tie():
    labels = np.array([0, 1] * 30)

    def good_at_one(train, valid, C):
        return labels[valid] if C == 1.0 else 1 - labels[valid]

    assert D.choose_C(good_at_one, labels, grid=(0.1, 1.0, 10.0))[0] == 1.0
    best, means = D.choose_C(lambda t, v, C: labels[v], labels, grid=(10.0, 0.1, 1.0))
    assert best == 0.1 and set(means.values()) == {1.0}


def test_choose_c_never_predicts_a_sentence_it_trained_on():
    labels = np.arange(30) % 3
    seen = []

    def record(train, valid, C):
        assert not set(train.tolist()) & set(valid.tolist())
        seen.extend(valid.tolist())
        return labels[valid]

    D.choose_C(record, labels, grid=(1.0,), folds=3)
    assert sorted(seen) == list(range(30))


def test_folds_by_group_never_split_a_group_and_cover_every_sentence():
    groups = np.repeat([f"file{i}" for i in range(10)], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    parts = D.folds_by_group(groups, folds=3, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(groups)))
    assert all(not set(groups[a]) & set(groups[b]) for i, a in enumerate(parts) for b in parts[i + 1 :])
    assert max(map(len, parts)) - min(map(len, parts)) <= 10  # the greedy fill keeps the parts near in size
    assert [p.tolist() for p in D.folds_by_group(groups, 3, seed=0)] == [p.tolist() for p in parts]


def test_choose_c_with_groups_keeps_each_file_in_one_fold():
    labels = np.arange(40) % 2
    groups = np.repeat(np.arange(8), 5)
    pairs = []

    def record(train, valid, C):
        pairs.append((set(groups[train]), set(groups[valid])))
        return labels[valid]

    D.choose_C(record, labels, grid=(1.0,), groups=groups)
    assert len(pairs) == 3 and all(not t & v for t, v in pairs)
    with pytest.raises(ValueError, match="need a group for every label"):
        D.choose_C(record, labels, grid=(1.0,), groups=groups[:5])


def test_tfidf_learns_a_separable_toy_task():
    texts = [f"the {w} sat on the mat" for w in ("cat", "dog") * 15] + ["a cat ran", "a dog ran"]
    y = np.array([0, 1] * 15 + [0, 1])
    result = D.tfidf_arm(texts, y, ["the cat sat", "the dog sat"], grid=(1.0, 10.0))
    assert result["predicted"].tolist() == [0, 1] and result["C"] in (1.0, 10.0)


def test_scores_accuracy_and_macro_f1_as_scikit_learn():
    from sklearn.metrics import f1_score

    gold, predicted = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    got = D.scores(predicted, gold, 4)
    assert got["accuracy"] == pytest.approx(4 / 6)
    # class 3 never occurs: its F1 counts as 0, so macro-F1 averages over all four classes
    assert got["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro") * 3 / 4)


def test_compare_says_beats_only_beyond_the_spread():
    curve = D.Curve()
    for d, (a, b) in enumerate([(0.30, 0.20), (0.32, 0.21), (0.29, 0.22)]):
        curve.rows += [{"arm": "a", "task": "genre", "labels": 100, "draw": d, "accuracy": a},
                       {"arm": "b", "task": "genre", "labels": 100, "draw": d, "accuracy": b}]  # fmt: skip
    c = D.compare(curve, "a", "b", "genre", 100)
    assert c["word"] == "beats" and c["difference"] == pytest.approx(0.28 / 3) and c["draws"] == 3
    assert D.compare(curve, "b", "a", "genre", 100)["word"] == "loses to"
    curve.rows[4]["accuracy"] = 0.20  # arm a in draw 2: now below b there (0.22)
    assert D.compare(curve, "a", "b", "genre", 100)["word"] == "ties"
    with pytest.raises(KeyError, match="no 'genre' rows at 50 labels"):
        D.compare(curve, "a", "b", "genre", 50)


# --------------------------------------------------------------------------- fine-tuning through transformers


def test_the_export_loads_as_a_sequence_classifier_that_reads_the_course_models_states(tmp_path, tokenizer):
    ours = tiny_course_model()
    folder = M.export_pretrained(ours, tmp_path / "hf", tokenizer)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5, local_files_only=True).eval()
    assert type(classifier).__name__ == "RoFormerForSequenceClassification"
    batch = tokenizer(["The jury said it.", "A longer sentence with more words."], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = ours.encode(batch["input_ids"], batch["attention_mask"])
        logits = classifier(**batch).logits
        head = classifier.classifier  # RoFormer's: the state at <s>, dense, GELU, out_proj
        expected = head.out_proj(torch.nn.functional.gelu(head.dense(states[:, 0])))
    assert torch.allclose(classifier.roformer(**batch).last_hidden_state, states, atol=1e-5)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_sequence_classifier_from_a_folder_and_from_a_model_get_the_same_body_and_head(tmp_path, tokenizer):
    hf = M.to_roformer(tiny_course_model())
    hf.save_pretrained(tmp_path / "m")
    a, b = D.sequence_classifier(tmp_path / "m", 3, seed=7), D.sequence_classifier(hf, 3, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a.roformer.embeddings.word_embeddings.weight, hf.roformer.embeddings.word_embeddings.weight)


def test_fine_tuning_learns_a_toy_task_and_is_seeded(tokenizer):
    texts = ["the cat sat on the mat", "the dog ran in the park"] * 8
    labels = [0, 1] * 8

    def run():
        model = D.sequence_classifier(M.to_roformer(tiny_course_model()), 2, seed=0)
        losses = D.fine_tune(model, tokenizer, texts, labels, steps=60, lr=1e-2, batch_size=8, seed=0)
        return losses, D.classify(model, tokenizer, texts[:2])

    losses, predicted = run()
    assert np.mean(losses[-5:]) < 0.1 < np.mean(losses[:3]) and predicted.tolist() == [0, 1]
    assert run()[0] == losses
    with pytest.raises(ValueError, match="need as many labels as texts"):
        D.fine_tune(D.sequence_classifier(M.to_roformer(tiny_course_model()), 2), tokenizer, texts, labels[:3],
                    steps=1, lr=1e-3)  # fmt: skip


def test_fine_tuning_updates_are_the_minimum_or_the_passes_over_the_labels():
    assert D.finetune_updates(100, steps=100, epochs=16) == 100
    assert D.finetune_updates(1000, steps=100, epochs=16) == 1000
    assert D.finetune_updates(1001, steps=100, epochs=1) == 100 and D.finetune_updates(1601, 100, 1) == 101
    assert D.finetune_updates(10, steps=3) == 3


# --------------------------------------------------------------------------- the embedding space


def test_nearest_words_of_brown_small_and_a_word_that_is_not_one_token(tokenizer):
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(str(BROWN_SMALL), local_files_only=True)
    weight = model.get_input_embeddings().weight
    nearest = D.nearest_words(weight, tokenizer, "Monday", k=5)
    assert len(nearest) == 5 and "Monday" not in [w for w, _ in nearest]
    assert all(-1 <= s <= 1 for _, s in nearest) and [s for _, s in nearest] == sorted(
        (s for _, s in nearest), reverse=True
    )
    with pytest.raises(ValueError, match="not one: pick a word in the vocabulary"):
        D.nearest_words(weight, tokenizer, "antidisestablishmentarianism")


def test_chosen_probe_standardises_new_features_as_its_labelled_ones():
    gen = np.random.default_rng(0)
    x = torch.tensor(gen.normal(size=(60, 5)) * [1, 10, 100, 1, 1] + [0, 5, -50, 0, 0])
    y = (x[:, 0] > 0).long().numpy() + 2 * (x[:, 3] > 0).long().numpy()
    test = torch.tensor(gen.normal(size=(20, 5)))
    found = D.chosen_probe(x, y, 4, grid=(0.1, 1.0))
    arm = D.probe_arm(x, y, test, 4, grid=(0.1, 1.0))
    assert found["C"] == arm["C"] and (found["predict"](test) == arm["predicted"]).all()
    expected = D.fit_probe(D.standardize(x)[0], y, 4, found["C"]).predict(D.standardize(x, test)[1])
    assert (found["predict"](test) == expected).all()
    assert (found["predict"](x) == y).mean() > 0.8  # it learned the toy task
