"""course_lib.multilingual: language probabilities, the language-batched sampler, the memory-mapped
token store; and its command line (course_lib.cli.multilingual): the config, a short run, sampling.alpha and
data.mlm_probability reaching the sampler and the collator, and a stopped run resumed by the same command."""

import gzip
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from tiny_runs import SMALL_MULTILINGUAL

from course_lib import multilingual as ml
from course_lib.cli import multilingual as cli
from course_lib.cli.schema import LanguageData, MultilingualConfig
from course_lib.cli.schema import load_multilingual as load_config
from course_lib.config import ConfigError, apply_overrides, from_dict
from course_lib.data import DataError, load_multilingual
from course_lib.paths import ROOT

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
    proportional = {k: v / 26_000 for k, v in COUNTS.items()}
    assert ml.language_probabilities(COUNTS, 1.0) == pytest.approx(proportional, abs=1e-15)
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
        epochs = [seen[lang][e * n : (e + 1) * n] for e in range(len(seen[lang]) // n)]
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
    model = EncoderForMaskedLM(
        EncoderConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_layers=1,
            num_heads=2,
            intermediate_size=32,
            max_length=32,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    results = ml.evaluate_languages(model, sets)
    assert list(results) == ["eng", "zul"]
    for r in results.values():
        assert r["tokens"] > 0 and r["ppl"] == pytest.approx(math.exp(r["loss"]))
        assert abs(r["loss"] - math.log(len(tokenizer))) < 1.0  # an untrained model is near ln V


def test_language_baselines_use_each_languages_own_counts(tokenizer, tmp_path):
    from course_lib.baselines import NgramCounts

    train = load_multilingual(split="train", langs=["eng", "zul", "swh"])
    evals = load_multilingual(split="eval", langs=["eng", "zul", "swh"])
    store = ml.TokenStore.build({k: v[:300] for k, v in train.items()}, tokenizer, tmp_path / "t", 2, 32)
    eval_store = ml.TokenStore.build({k: v[:60] for k, v in evals.items()}, tokenizer, tmp_path / "e", 2, 32)
    sets = ml.eval_sets(eval_store, tokenizer, batch_size=8)
    base = ml.language_baselines(store, tokenizer, sets)
    assert sorted(base) == ["eng", "swh", "zul"]
    pooled = NgramCounts.fit([store[i] for i in range(len(store))], tokenizer)
    for lang, scores in base.items():
        assert scores["tokens"] == sum(int((b["labels"] != -100).sum()) for b in sets[lang])
        assert scores["neighbour_loss"] < scores["no_context_loss"] < 15  # finite: unseen tokens back off
        # its own language's counts: better than the pooled unigram of every language on its eval masks
        assert scores["no_context_loss"] < pooled.score(sets[lang])["no_context_loss"]
    # without the back-off, the eval tokens Swahili's 39 sentences never show get probability 0 (loss 27.6 each)
    alone = NgramCounts.fit(store.language("swh"), tokenizer)
    seen = set(torch.nonzero(alone.unigram).flatten().tolist())
    unseen = sum(int(t) not in seen for b in sets["swh"] for t in b["labels"][b["labels"] != -100])
    assert unseen > 0 and alone.score(sets["swh"])["no_context_loss"] > base["swh"]["no_context_loss"] + 0.3


def _write(folder, name, lines):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{name}.gz", "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        cli.language_texts(LanguageData(train_folder=str(tmp_path / "missing")))
    _write(tmp_path / "d", "train.aaa", ["one two three"] * 5)
    _write(tmp_path / "d", "eval.aaa", ["one two"])
    with pytest.raises(DataError, match="unknown language 'bbb'"):
        cli.language_texts(LanguageData(train_folder=str(tmp_path / "d"), languages=["aaa", "bbb"]))
    (tmp_path / "d" / "train.ccc").write_text("\n\n")
    with pytest.raises(DataError, match=r"train\.ccc: file is empty"):
        cli.language_texts(LanguageData(train_folder=str(tmp_path / "d")))
    train, held = cli.language_texts(LanguageData(train_folder=str(tmp_path / "d"), languages=["aaa"], split=0.2))
    assert (len(train["aaa"]), len(held["aaa"])) == (4, 1)


def _config(values: dict, overrides=()) -> MultilingualConfig:
    return from_dict(MultilingualConfig, apply_overrides(values, list(overrides), MultilingualConfig))


def test_config_from_dict_yaml_and_overrides(tmp_path):
    config = _config(
        {"data": {"languages": ["eng", "zul"]}},
        ["--sampling.alpha", "0.7", "--max_steps=5", "--mode", "train", "--mlm_probability", "0.3"],
    )
    assert config.sampling.alpha == 0.7 and config.data.languages == ["eng", "zul"]
    assert config.train.max_steps == 5 and config.run.mode == "train" and config.data.mlm_probability == 0.3
    assert _config({}, ["--alpha", "0.5"]).sampling.alpha == 0.5  # by its last part too
    assert _config({}).run.resume == "auto"  # a stopped run continues, as pretraining does
    shipped = load_config(ROOT / "configs" / "multilingual.yaml")
    assert shipped.sampling.alpha == 0.3 and shipped.model.masked_only and shipped.train.batch_size == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  alpah: 0.3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'sampling\.alpah'; did you mean 'alpha'"):
        load_config(bad)
    for values, message in [
        ({"train": {"batch_size": "many"}}, "train.batch_size must be an integer"),
        ({"sampling": {"alpha": 2}}, "sampling.alpha must be between 0 and 1"),
        ({"run": {"mode": "fit"}}, "run.mode='fit'"),
        ({"run": {"log_level": "loud"}}, "log_level"),
        ({"data": {"mlm_probability": 1.5}}, "data.mlm_probability must be between 0 and 1"),
        ({"data": {"languages": "eng"}}, None),
        ({"model": {"hidden": 3}}, "unknown config key 'model.hidden'"),
    ]:
        if message is None:
            assert _config(values).data.languages == ["eng"]
            continue
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
            _config(values)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


TINY = [
    *SMALL_MULTILINGUAL,
    *"--languages eng,zul,swh --max_steps 4 --eval_every 2 --save_every 2 --warmup_steps 1".split(),
    *"--max_length 32 --batch_size 8 --num_layers 1 --schedule constant".split(),
]


def test_cli_train_then_evaluate(tmp_path, capsys, monkeypatch):
    args = ["--config", "configs/multilingual.yaml", "--output_dir", str(tmp_path), *TINY]
    monkeypatch.chdir(ROOT)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "swh" in out and "p = " in out
    folder = next(tmp_path.glob("multilingual.*"))
    results = json.loads((folder / "eval_languages.json").read_text())
    assert list(results) == ["eng", "zul", "swh"]  # in the order asked for
    for r in results.values():  # every language judged against its own baselines, on the same masks
        assert r["gain"] == pytest.approx(r["no_context_loss"] - r["loss"])
        assert r["neighbour_loss"] < r["no_context_loss"]
    assert "no-context" in out and "gain" in out
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert cli.main(args + ["--mode", "evaluate"]) == 0
    again = json.loads((folder / "eval_languages.json").read_text())
    for lang in results:  # the checkpoint, evaluated afresh, gives the same table
        assert again[lang] == pytest.approx(results[lang])
    assert cli.main(args + ["--mode", "evaluate", "--hidden_size", "32", "--num_heads", "2"]) == 2
    assert (
        f"error: run.mode=evaluate: {folder} was trained with other model settings (model.hidden_size: 16 -> 32)"
        in capsys.readouterr().err
    )
    assert cli.main(args + ["--sampling.alpha", "3"]) == 2
    assert "sampling.alpha must be between 0 and 1" in capsys.readouterr().err
    assert cli.main(args + ["--languages", "eng,xyz"]) == 2  # stops before a new run would be refused for its settings
    assert "unknown language 'xyz'" in capsys.readouterr().err
    assert cli.main(args + ["--languages", "eng,zul"]) == 2  # resume (run.resume auto) with other data: refused
    assert "cannot resume" in capsys.readouterr().err and list(tmp_path.iterdir()) == [folder]
    assert cli.main(args + ["--lang_sampling_factor", "0.7"]) == 2  # the key of earlier versions
    assert "config key 'lang_sampling_factor' is now 'sampling.alpha'" in capsys.readouterr().err


def test_cli_sampling_alpha_and_mlm_probability_reach_the_run(tmp_path, capsys, monkeypatch):
    """--sampling.alpha sets the sampler's (and the tokenizer sample's) p_i; data.mlm_probability the collator's
    masking rate."""
    from course_lib import masking

    made = {"collators": [], "samplers": []}

    class Collator(masking.MLMCollator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["collators"].append(kwargs["mlm_probability"])

    class Sampler(ml.LanguageBatchSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made["samplers"].append(self)

    monkeypatch.setattr(cli.masking, "MLMCollator", Collator)
    monkeypatch.setattr(cli, "LanguageBatchSampler", Sampler)
    assert cli.main(["--output_dir", str(tmp_path), *TINY, "--sampling.alpha", "0.7", "--mlm_probability", "0.4"]) == 0
    assert made["collators"] == [0.4]
    (sampler,) = made["samplers"]
    assert sampler.alpha == 0.7 and not sampler.mixed
    sizes = {lang: len(r) for lang, r in sampler.ranges.items()}
    assert sampler.probs == pytest.approx(ml.language_probabilities(sizes, 0.7))
    out = capsys.readouterr().out
    for lang, p in sampler.probs.items():
        assert f"{lang}: " in out and f"p = {p:.3f}" in out
    folder = next(tmp_path.glob("multilingual.*"))
    hparams = json.loads((folder / "hparams.json").read_text())
    assert hparams["sampling"] == {"alpha": 0.7, "mixed": False} and hparams["data"]["mlm_probability"] == 0.4


def test_cli_ctrl_c_then_the_same_command_resumes(tmp_path, capsys, monkeypatch):
    """Ctrl-C (KeyboardInterrupt, as Python raises it for SIGINT) during update 4: one line, status 130; the
    same command then continues from the checkpoint at step 2 and ends as a run never stopped does."""
    args = ["--output_dir", str(tmp_path / "straight"), *TINY]
    assert cli.main(args) == 0
    (straight,) = (tmp_path / "straight").iterdir()
    capsys.readouterr()

    real = ml.LanguageBatchSampler.__next__
    calls = []

    def draw(self):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(ml.LanguageBatchSampler, "__next__", draw)
    args = ["--output_dir", str(tmp_path / "stopped"), *TINY]
    assert cli.main(args) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "stopped at step 3; run the same command again to resume (it continues from its checkpoint at step 2)"
    ]
    monkeypatch.setattr(ml.LanguageBatchSampler, "__next__", real)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    (stopped,) = (tmp_path / "stopped").iterdir()
    assert f"experiment folder: {stopped} (resuming)" in out
    assert f"resumed from {stopped / 'checkpoints' / 'step-0000002.pt'} at step 2" in out
    rows = [training_rows(folder) for folder in (straight, stopped)]
    assert rows[0] == rows[1] and [step for step, *_ in rows[0] if _[0] is not None] == [1, 2, 3, 4]
    tables = [json.loads((folder / "eval_languages.json").read_text()) for folder in (straight, stopped)]
    assert list(tables[0]) == list(tables[1]) == ["eng", "zul", "swh"]
    for lang in tables[0]:
        assert tables[1][lang] == pytest.approx(tables[0][lang])


def training_rows(folder):
    from course_lib import training

    return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in training.read_metrics(folder)]


def test_train_with_sampler_resumes_exactly(tokenizer, tmp_path):
    from course_lib import masking, training
    from course_lib.model import EncoderConfig, EncoderForMaskedLM

    texts = {k: v[:200] for k, v in load_multilingual(split="train", langs=["eng", "zul", "swh"]).items()}
    store = ml.TokenStore.build(texts, tokenizer, tmp_path / "store", max_length=32)

    def run(folder, steps, resume):
        torch.manual_seed(0)
        model = EncoderForMaskedLM(
            EncoderConfig(
                vocab_size=len(tokenizer),
                hidden_size=16,
                num_layers=1,
                num_heads=2,
                intermediate_size=32,
                max_length=32,
                dropout=0.1,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        config = training.TrainConfig(
            max_steps=steps, batch_size=4, lr=1e-3, warmup_steps=2, save_every=3, eval_every=100, keep_last=5
        )
        sampler = ml.LanguageBatchSampler(store.ranges, 4, 0.3, seed=0)
        training.train(
            model,
            store,
            None,
            config,
            collator=masking.MLMCollator(tokenizer, seed=0),
            folder=folder,
            resume=resume,
            progress=False,
            stream=sampler,
        )
        return [r["loss"] for r in training.read_metrics(folder) if "loss" in r]

    straight = run(tmp_path / "a", 8, None)
    run(tmp_path / "b", 3, None)  # a 3-step run (its schedule ends at lr 0), extended to 8 steps
    assert run(tmp_path / "b", 8, "auto") == straight


def test_own_vocabulary_mass_is_where_the_probability_goes(tokenizer, tmp_path):
    """Uniform scores give each language the share of the vocabulary its training text uses; scores that
    pick one token give 1 where that token is the language's own and 0 where it is not."""
    from types import SimpleNamespace

    texts = load_multilingual(split="train", langs=["eng", "zul"])
    store = ml.TokenStore.build({k: v[:200] for k, v in texts.items()}, tokenizer, tmp_path / "t", 2, 32)
    sets = ml.eval_sets(store, tokenizer, batch_size=8)
    vocabulary = len(tokenizer)
    own = {lang: set(np.unique(np.asarray(store.tokens[lang])).tolist()) for lang in ("eng", "zul")}
    english_only = min(own["eng"] - own["zul"])

    class Scores(torch.nn.Module):
        def __init__(self, token=None):
            super().__init__()
            self.token, self.weight = token, torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask, labels):
            logits = torch.zeros(*input_ids.shape, vocabulary)
            if self.token is not None:
                logits[..., self.token] = 50.0
            return SimpleNamespace(logits=logits)

    uniform = ml.own_vocabulary_mass(Scores(), sets, store)
    picked = ml.own_vocabulary_mass(Scores(english_only), sets, store)
    for lang in ("eng", "zul"):
        assert uniform[lang]["own"] == len(own[lang]) and uniform[lang]["vocabulary"] == vocabulary
        assert uniform[lang]["mass"] == pytest.approx(len(own[lang]) / vocabulary, rel=1e-4)
    assert picked["eng"]["mass"] == pytest.approx(1.0, abs=1e-6) and picked["zul"]["mass"] < 1e-6
