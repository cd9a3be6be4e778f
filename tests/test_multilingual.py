"""course_lib.multilingual: language probabilities, the language-batched sampler, the memory-mapped
token store, the master config, and a short run through the command line."""

import gzip
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from course_lib import multilingual as ml
from course_lib.data import DataError, load_multilingual
from course_lib.train import ConfigError

COUNTS = {"zul": 10_000, "xho": 8_000, "swa": 5_000, "ven": 3_000}
# computed with 30-digit arithmetic (mpmath), p_i = (n_i/N)^alpha / sum_j (n_j/N)^alpha
EXPECTED = {
    1.0: {"zul": 0.384615384615385, "xho": 0.307692307692308, "swa": 0.192307692307692, "ven": 0.115384615384615},
    0.7: {"zul": 0.344652703849274, "xho": 0.294811676748928, "swa": 0.212158625444127, "ven": 0.148376993957672},
    0.3: {"zul": 0.290330866172667, "xho": 0.271531491942984, "swa": 0.235821941784931, "ven": 0.202315700099418},
}


@pytest.mark.parametrize("alpha", sorted(EXPECTED))
def test_probabilities_exact(alpha):
    probs = ml.language_probabilities(COUNTS, alpha)
    assert list(probs) == list(COUNTS)
    for lang, p in EXPECTED[alpha].items():
        assert probs[lang] == pytest.approx(p, abs=1e-14)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-15)


def test_probability_limits():
    assert ml.language_probabilities(COUNTS, 1.0) == pytest.approx({k: v / 26_000 for k, v in COUNTS.items()}, abs=1e-15)
    assert ml.language_probabilities(COUNTS, 0.0) == pytest.approx({k: 0.25 for k in COUNTS}, abs=1e-15)
    near_zero = ml.language_probabilities(COUNTS, 1e-9)
    assert max(abs(p - 0.25) for p in near_zero.values()) < 1e-9
    # smaller alpha never lowers the smallest language's share
    shares = [ml.language_probabilities(COUNTS, a)["ven"] for a in (1.0, 0.7, 0.5, 0.3, 0.1, 0.0)]
    assert shares == sorted(shares)


def test_expected_sentences():
    per_epoch = ml.expected_sentences(COUNTS, 0.3)
    assert sum(per_epoch.values()) == pytest.approx(26_000)
    assert per_epoch["ven"] == pytest.approx(EXPECTED[0.3]["ven"] * 26_000, rel=1e-12)
    assert ml.expected_sentences(COUNTS, 1.0, total=100)["zul"] == pytest.approx(100 * 10 / 26)


@pytest.mark.parametrize("bad, message", [({}, "no languages"), ({"zul": 0}, "zul"), ({"zul": 5}, "alpha")])
def test_probability_errors(bad, message):
    alpha = 1.5 if message == "alpha" else 0.3
    with pytest.raises(ValueError, match=message):
        ml.language_probabilities(bad, alpha)


def _ranges(counts):
    out, start = {}, 0
    for lang, n in counts.items():
        out[lang], start = range(start, start + n), start + n
    return out


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_sampler_frequencies_and_one_language_per_batch(alpha):
    counts = {"big": 5_000, "mid": 800, "small": 37}
    ranges = _ranges(counts)
    sampler = ml.LanguageBatchSampler(ranges, batch_size=8, alpha=alpha, seed=1)
    batches = [next(sampler) for _ in range(20_000)]
    langs = ml.batch_languages(batches, ranges)
    assert "mixed" not in langs
    assert all(len(b) == 8 for b in batches)
    freq = Counter(langs)
    probs = ml.language_probabilities(counts, alpha)
    for lang, p in probs.items():
        sigma = math.sqrt(p * (1 - p) / len(batches))
        assert abs(freq[lang] / len(batches) - p) < 5 * sigma, (lang, freq[lang], p)


def test_sampler_walks_each_language_epoch_by_epoch():
    counts = {"a": 50, "b": 13}
    ranges = _ranges(counts)
    sampler = ml.LanguageBatchSampler(ranges, batch_size=5, alpha=0.5, seed=0)
    seen = {lang: [] for lang in counts}
    for batch in (next(sampler) for _ in range(400)):
        lang = ml.batch_languages([batch], ranges)[0]
        seen[lang] += batch
    for lang, r in ranges.items():
        n = len(r)
        epochs = [seen[lang][e * n:(e + 1) * n] for e in range(len(seen[lang]) // n)]
        assert len(epochs) >= 3
        for order in epochs:
            assert sorted(order) == list(r)  # every sentence once per epoch
        assert epochs[0] != epochs[1] and epochs[0] != list(r)  # shuffled afresh


def test_sampler_mixed_batches():
    counts = {"big": 3_000, "small": 300}
    ranges = _ranges(counts)
    sampler = ml.LanguageBatchSampler(ranges, batch_size=16, alpha=0.3, seed=0, mixed=True)
    batches = [next(sampler) for _ in range(2_000)]
    assert "mixed" in ml.batch_languages(batches, ranges)
    small = sum(i in ranges["small"] for b in batches for i in b) / (16 * len(batches))
    p = ml.language_probabilities(counts, 0.3)["small"]
    assert abs(small - p) < 5 * math.sqrt(p * (1 - p) / (16 * len(batches)))


def test_sampler_resume_and_seed():
    ranges = _ranges({"a": 40, "b": 7, "c": 90})
    straight = ml.LanguageBatchSampler(ranges, 6, 0.3, seed=3)
    first = [next(straight) for _ in range(25)]
    state = straight.state_dict()
    rest = [next(straight) for _ in range(25)]
    resumed = ml.LanguageBatchSampler(ranges, 6, 0.3, seed=3)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(25)] == rest
    other = ml.LanguageBatchSampler(ranges, 6, 0.3, seed=4)
    assert [next(other) for _ in range(25)] != first
    with pytest.raises(ValueError, match="other data or settings"):
        ml.LanguageBatchSampler(ranges, 6, 0.7, seed=3).load_state_dict(state)


@pytest.fixture(scope="module")
def tokenizer():
    from course_lib.tokenization import train_tokenizer

    texts = load_multilingual(split="train", langs=["eng", "zul", "swh"])
    return train_tokenizer(ml.tokenizer_sample(texts, 0.3, 3_000), 600, max_length=32)


def test_token_store_round_trip(tokenizer, tmp_path):
    texts = {"zul": ["Vula ifayela", "x", "Gcina umbhalo njengoba unjalo"], "swh": ["Kila mtu ana haki ya kuishi."]}
    store = ml.TokenStore.build(texts, tokenizer, tmp_path / "store", min_length=2, max_length=32)
    assert store.counts() == {"zul": 2, "swh": 1}  # "x" is one token: dropped
    assert isinstance(store.tokens["zul"], np.memmap) and store.tokens["zul"].dtype == np.uint16
    expected = tokenizer(["Vula ifayela", "Gcina umbhalo njengoba unjalo", "Kila mtu ana haki ya kuishi."])["input_ids"]
    assert [store[i].tolist() for i in range(len(store))] == expected
    reopened = ml.TokenStore(tmp_path / "store")
    assert reopened[2].tolist() == expected[2] and reopened.ranges == {"zul": range(0, 2), "swh": range(2, 3)}
    with pytest.raises(IndexError):
        store[3]
    with pytest.raises(DataError, match="no sentence of at least"):
        ml.TokenStore.build({"zul": ["x"]}, tokenizer, tmp_path / "empty", min_length=2)
    with pytest.raises(DataError, match="not a token store"):
        ml.TokenStore(tmp_path)


def test_truncation(tokenizer, tmp_path):
    store = ml.TokenStore.build({"eng": ["word " * 100]}, tokenizer, tmp_path / "s", max_length=16)
    row = store[0]
    assert len(row) == 16 and row[-1] == tokenizer.eos_token_id


def test_per_language_eval(tokenizer, tmp_path):
    from course_lib.model import EncoderConfig, EncoderForMaskedLM

    eval_texts = load_multilingual(split="eval", langs=["eng", "zul"])
    store = ml.TokenStore.build({k: v[:40] for k, v in eval_texts.items()}, tokenizer, tmp_path / "e", max_length=32)
    sets = ml.eval_sets(store, tokenizer, batch_size=8)
    torch.manual_seed(0)
    model = EncoderForMaskedLM(EncoderConfig(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2,
                                             intermediate_size=32, max_length=32, pad_token_id=tokenizer.pad_token_id))
    results = ml.evaluate_languages(model, sets)
    assert list(results) == ["eng", "zul"]
    for r in results.values():
        assert r["tokens"] > 0 and r["ppl"] == pytest.approx(math.exp(r["loss"]))
        assert abs(r["loss"] - math.log(len(tokenizer))) < 1.0  # an untrained model is near ln V


def _write(folder, name, lines):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{name}.gz", "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ml.load_texts(ml.DatasetConfig(train_folder=str(tmp_path / "missing")))
    _write(tmp_path / "d", "train.aaa", ["one two three"] * 5)
    _write(tmp_path / "d", "eval.aaa", ["one two"])
    with pytest.raises(DataError, match="unknown language 'bbb'"):
        ml.load_texts(ml.DatasetConfig(train_folder=str(tmp_path / "d"), languages=["aaa", "bbb"]))
    (tmp_path / "d" / "train.ccc").write_text("\n\n")
    with pytest.raises(DataError, match=r"train\.ccc: file is empty"):
        ml.load_texts(ml.DatasetConfig(train_folder=str(tmp_path / "d")))
    train, held = ml.load_texts(ml.DatasetConfig(train_folder=str(tmp_path / "d"), languages=["aaa"], split=0.2))
    assert (len(train["aaa"]), len(held["aaa"])) == (4, 1)


def test_config_from_dict_yaml_and_overrides(tmp_path):
    config = ml.MultilingualConfig.from_dict({"dataset": {"languages": ["eng", "zul"]}},
                                             ["--dataset.lang_sampling_factor", "0.7", "--max_steps=5", "--mode", "train"])
    assert config.dataset.lang_sampling_factor == 0.7 and config.dataset.languages == ["eng", "zul"]
    assert config.train.max_steps == 5 and config.common.mode == "train"
    from course_lib.paths import ROOT

    shipped = ml.MultilingualConfig.from_yaml(ROOT / "configs" / "multilingual.yaml")
    assert shipped.dataset.lang_sampling_factor == 0.3 and shipped.model.masked_only
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  lang_sampling_factr: 0.3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'dataset\.lang_sampling_factr'; did you mean 'lang_sampling_factor'"):
        ml.MultilingualConfig.from_yaml(bad)
    for values, message in [({"dataset": {"batch_size": "many"}}, "dataset.batch_size must be an integer"),
                            ({"dataset": {"lang_sampling_factor": 2}}, "between 0 and 1"),
                            ({"common": {"mode": "fit"}}, "common.mode='fit'"),
                            ({"common": {"log_level": "loud"}}, "log_level"),
                            ({"dataset": {"languages": "eng"}}, None),
                            ({"model": {"hidden": 3}}, "unknown config key 'model.hidden'")]:
        if message is None:
            assert ml.MultilingualConfig.from_dict(values).dataset.languages == ["eng"]
            continue
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
            ml.MultilingualConfig.from_dict(values)
    with pytest.raises(ConfigError, match="not found"):
        ml.MultilingualConfig.from_yaml(tmp_path / "nope.yaml")


def test_cli_train_then_evaluate(tmp_path, capsys):
    args = ["--config", "configs/multilingual.yaml", "--output_dir", str(tmp_path), "--max_steps", "4",
            "--eval_every", "2", "--save_every", "2", "--warmup_steps", "1", "--languages", "eng,zul,swh",
            "--max_sentences", "300", "--eval_sentences", "30", "--vocab_size", "400", "--tokenizer_sentences",
            "600", "--hidden_size", "16", "--intermediate_size", "32", "--no-progress"]
    from course_lib.paths import ROOT
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert ml.main(args) == 0
        out = capsys.readouterr().out
        assert "swh" in out and "p = " in out
        folder = next(tmp_path.glob("multilingual.*"))
        results = json.loads((folder / "eval_languages.json").read_text())
        assert list(results) == ["eng", "zul", "swh"]  # in the order asked for
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
        assert ml.main(args + ["--mode", "evaluate"]) == 0
        again = json.loads((folder / "eval_languages.json").read_text())
        for lang in results:  # the checkpoint, evaluated afresh, gives the same table
            assert again[lang] == pytest.approx(results[lang])
        assert ml.main(args + ["--lang_sampling_factor", "3"]) == 2
        assert "lang_sampling_factor must be between 0 and 1" in capsys.readouterr().err
        assert ml.main(args + ["--languages", "eng,xyz"]) == 2
        assert "unknown language 'xyz'" in capsys.readouterr().err
    finally:
        os.chdir(cwd)


def test_train_with_sampler_resumes_exactly(tokenizer, tmp_path):
    from course_lib import masking, training
    from course_lib.model import EncoderConfig, EncoderForMaskedLM

    texts = {k: v[:200] for k, v in load_multilingual(split="train", langs=["eng", "zul", "swh"]).items()}
    store = ml.TokenStore.build(texts, tokenizer, tmp_path / "store", max_length=32)

    def run(folder, steps, resume):
        torch.manual_seed(0)
        model = EncoderForMaskedLM(EncoderConfig(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2,
                                                 intermediate_size=32, max_length=32, dropout=0.1,
                                                 pad_token_id=tokenizer.pad_token_id))
        config = training.TrainConfig(max_steps=steps, batch_size=4, lr=1e-3, warmup_steps=2, save_every=3,
                                      eval_every=100, keep_last=5)
        sampler = ml.LanguageBatchSampler(store.ranges, 4, 0.3, seed=0)
        training.train(model, store, None, config, collator=masking.MLMCollator(tokenizer, seed=0), folder=folder,
                       resume=resume, progress=False, stream=sampler)
        return [r["loss"] for r in training.read_metrics(folder) if "loss" in r]

    straight = run(tmp_path / "a", 8, None)
    run(tmp_path / "b", 3, None)  # a 3-step run (its schedule ends at lr 0), extended to 8 steps
    assert run(tmp_path / "b", 8, "auto") == straight
