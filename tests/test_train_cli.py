"""course_lib.train: configs, overrides and their errors, resume rules, your own text files; fill-mask helpers.
(The whole pipeline runs, is killed and resumed in tests/test_training.py.)"""

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from course_lib import tokenization, training
from course_lib import train as cli
from course_lib.paths import ROOT

CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_shipped_configs_load(name):
    config = cli.load_config(CONFIGS / f"{name}.yaml")
    assert config.name == name and config.train.max_steps > 0
    assert config.model.pre_norm is False  # exportable to transformers (RoFormerForMaskedLM or RobertaForMaskedLM)


def test_overrides_by_full_or_unique_name():
    config = cli.load_config(CONFIGS / "tiny.yaml", ["--max_steps", "7", "--train.lr=1e-3", "--seed", "3",
                                                      "--masked_only", "false", "--output_dir", "/tmp/x"])
    assert (config.train.max_steps, config.train.lr, config.train.seed) == (7, 1e-3, 3)
    assert config.model.masked_only is False and config.output_dir == "/tmp/x"
    assert config.model.hidden_size == 128  # untouched keys keep the file's values
    assert cli.load_config(None).train == training.TrainConfig()  # no file: the defaults


@pytest.mark.parametrize("overrides, message", [
    (["--learning_rate", "1e-3"], "unknown config key 'learning_rate'"),
    (["--train.max_step", "5"], "did you mean 'max_steps'"),
    (["--max_steps", "many"], "train.max_steps must be an integer, got 'many'"),
    (["--max_steps", "0"], "TrainConfig.max_steps must be a positive integer"),
    (["--precision", "fp8"], "precision='fp8'"),
    (["--corpus", "web"], "data.corpus='web'"),
    (["--train_files", "a.txt"], "only with data.corpus=files"),
    (["--corpus", "files"], "needs data.train_files"),
    (["--pre_norm", "maybe"], "model.pre_norm must be true or false"),
    (["--device", "tpu"], "device='tpu'"),
    (["--max_steps"], "--max_steps has no value"),
    (["max_steps", "3"], "expected --key value"),
])
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(cli.ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        cli.load_config(CONFIGS / "tiny.yaml", overrides)


def test_bad_config_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 10\n  lr_peak: 0.1\n")
    with pytest.raises(cli.ConfigError, match=r"bad.yaml: unknown config key 'train.lr_peak'"):
        cli.load_config(bad)
    bad.write_text("model: 3\n")
    with pytest.raises(cli.ConfigError, match="model must be a mapping"):
        cli.load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(cli.ConfigError, match="must be a mapping"):
        cli.load_config(bad)
    bad.write_text("train: {max_steps: [\n")
    with pytest.raises(cli.ConfigError, match="not valid YAML"):
        cli.load_config(bad)
    with pytest.raises(cli.ConfigError, match="not found"):
        cli.load_config(tmp_path / "missing.yaml")


def test_an_ambiguous_short_key_is_refused():
    @dataclass
    class A:
        seed: int = 0

    @dataclass
    class B:
        seed: int = 0

    @dataclass
    class Both:
        a: A = field(default_factory=A)
        b: B = field(default_factory=B)

    with pytest.raises(cli.ConfigError, match="ambiguous: say which of a.seed, b.seed"):
        cli.apply_overrides({}, ["--seed", "1"], cls=Both)
    assert cli.apply_overrides({}, ["--b.seed", "1"], cls=Both) == {"b": {"seed": "1"}}


def test_the_command_reports_errors_without_a_traceback(capsys, tmp_path):
    assert cli.main(["--config", str(CONFIGS / "tiny.yaml"), "--lr_max", "1"]) == 2
    assert "error:" in capsys.readouterr().err
    assert cli.main(["--config", str(CONFIGS / "tiny.yaml"), "--corpus", "files", "--train_files",
                     str(tmp_path / "nothing.txt"), "--output_dir", str(tmp_path / "runs")]) == 2
    assert "nothing.txt: file not found" in capsys.readouterr().err


def test_resume_refuses_a_run_with_other_settings(tmp_path):
    config = cli.load_config(CONFIGS / "tiny.yaml", ["--output_dir", str(tmp_path), "--resume", "none"])
    folder, resuming = cli.experiment_folder(config)
    assert not resuming and (folder / "hparams.json").is_file()
    later = dataclasses.replace(config, resume=str(folder), train=dataclasses.replace(config.train, max_steps=999))
    assert cli.experiment_folder(later) == (folder, True)  # more steps: fine
    other = dataclasses.replace(config, resume=str(folder), train=dataclasses.replace(config.train, lr=0.5))
    with pytest.raises(cli.ConfigError, match=r"train.lr: 0.002 -> 0.5"):
        cli.experiment_folder(other)
    with pytest.raises(cli.ConfigError, match="no hparams.json"):
        cli.experiment_folder(dataclasses.replace(config, resume=str(tmp_path)))
    # auto: only a folder with a checkpoint is resumed
    auto = dataclasses.replace(config, resume="auto")
    assert cli.experiment_folder(auto)[1] is False
    (folder / "checkpoints" / training.checkpoint_name(5)).write_bytes(b"x")
    assert cli.experiment_folder(auto) == (folder, True)


def test_your_own_text_files(tmp_path):
    lines = [f"text number {i}" for i in range(100)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    config = cli.from_dict(cli.DataConfig, {"corpus": "files", "train_files": [str(tmp_path / "train.txt")]})
    train, held_out = cli.load_texts(config, "train"), cli.load_texts(config, "eval")
    assert train == lines[:95] and held_out == lines[95:]  # no eval files: the last 5% are held out
    (tmp_path / "eval.txt").write_text("one\ntwo\n")
    config = dataclasses.replace(config, eval_files=[str(tmp_path / "eval.txt")], max_train_texts=10)
    assert cli.load_texts(config, "train") == lines[:10] and cli.load_texts(config, "eval") == ["one", "two"]


def test_fill_mask_examples_mask_one_whole_word(english_train, english_valid):
    tokenizer = tokenization.train_tokenizer(english_train[:3000], vocab_size=800, max_length=64)
    examples = training.fill_mask_examples(english_valid, tokenizer, 50, seed=1)
    assert len(examples) == 50
    assert examples == training.fill_mask_examples(english_valid, tokenizer, 50, seed=1)
    for text, answer in examples:
        assert text.count("<mask>") == 1
        assert len(tokenizer(" " + answer, add_special_tokens=False)["input_ids"]) == 1
        assert text.replace("<mask>", answer) in english_valid
        assert len(tokenizer(text)["input_ids"]) <= 64
    json.dumps(examples)


def test_most_frequent_answer_baseline():
    examples = [("a <mask>", "the"), ("b <mask>", "of"), ("c <mask>", "the"), ("d <mask>", "and")]
    assert training.most_frequent_answer(examples) == ("the", 0.5)
    with pytest.raises(ValueError):
        training.most_frequent_answer([])
