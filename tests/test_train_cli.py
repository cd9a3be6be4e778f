"""The command lines (course_lib.cli): configs, overrides and their errors, keys of earlier versions, resume
rules, your own text files, fill-mask helpers; and every user error tried as a user would meet it, through
`main([...])`: exit status 2 and exactly one `error: ...` line naming the file, key or value, with nothing
already saved lost; Ctrl-C: one line and status 130. (The whole pipeline runs, is killed and resumed in
tests/test_training.py.)"""

import dataclasses
import errno
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from fake_gpu import A100, T4, fake_gpu
from tiny_runs import SMALL_MULTILINGUAL

from course_lib import tokenization, training
from course_lib.cli import common, schema
from course_lib.cli import multilingual as ml_cli
from course_lib.cli import pretrain as cli
from course_lib.config import ConfigError, all_keys, apply_overrides, from_dict
from course_lib.paths import ROOT

CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_shipped_configs_load(name):
    config = cli.load_config(CONFIGS / f"{name}.yaml")
    assert config.run.name == name and config.train.max_steps > 0
    assert config.model.pre_norm is False  # exportable to transformers (RoFormerForMaskedLM or RobertaForMaskedLM)


def test_overrides_by_full_or_unique_name():
    config = cli.load_config(
        CONFIGS / "tiny.yaml",
        ["--max_steps", "7", "--train.lr=1e-3", "--seed", "3", "--masked_only", "false", "--output_dir", "/tmp/x"],
    )
    assert (config.train.max_steps, config.train.lr, config.train.seed) == (7, 1e-3, 3)
    assert config.model.masked_only is False and config.run.output_dir == "/tmp/x"
    assert config.model.hidden_size == 128  # untouched keys keep the file's values
    assert cli.load_config(None).train == training.TrainConfig()  # no file: the defaults


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--learning_rate", "1e-3"], "unknown config key 'learning_rate'"),
        (["--train.max_step", "5"], "did you mean 'max_steps'"),
        (["--max_steps", "many"], "train.max_steps must be an integer, got 'many'"),
        (["--max_steps", "0"], "TrainConfig.max_steps must be a positive integer"),
        (["--precision", "fp8"], "precision='fp8'"),
        (["--corpus", "web"], "data.corpus='web'"),
        (["--train_files", "a.txt"], "only with data.corpus=files"),
        (["--corpus", "files"], "needs data.train_files"),
        (["--pre_norm", "maybe"], "model.pre_norm must be true or false"),
        (["--device", "tpu"], "run.device='tpu'"),
        (["--max_steps"], "--max_steps has no value"),
        (["max_steps", "3"], "expected --key value"),
    ],
)
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        cli.load_config(CONFIGS / "tiny.yaml", overrides)


def test_bad_config_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 10\n  lr_peak: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.lr_peak'"):
        cli.load_config(bad)
    bad.write_text("model: 3\n")
    with pytest.raises(ConfigError, match="model must be a mapping"):
        cli.load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        cli.load_config(bad)
    bad.write_text("train: {max_steps: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cli.load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        cli.load_config(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- keys of earlier versions

# the shipped configs as they were before the sections run/data/model/train (+ sampling) (configs/tiny.yaml,
# small.yaml and base.yaml had the same keys; configs/multilingual.yaml had `common` and `dataset`)
PREVIOUS_PRETRAIN = """
name: tiny
output_dir: runs
resume: auto
fill_mask: 5
data: {corpus: brown, max_train_texts: null, max_eval_texts: 500, vocab_size: 4000, block_size: 64,
       mlm_probability: 0.4}
model: {hidden_size: 128, num_layers: 2, num_heads: 2, intermediate_size: 512, dropout: 0.0, attention_dropout: 0.0,
        masked_only: true, position: rotary, init_std: 0.05}
train: {max_steps: 600, batch_size: 32, lr: 2.0e-3, warmup_steps: 60, schedule: linear, weight_decay: 0.01,
        max_grad_norm: 1.0, precision: fp32, log_every: 10, eval_every: 150, save_every: 150, keep_last: 2, seed: 0}
"""
PREVIOUS_MULTILINGUAL = """
common: {run_name: multilingual, mode: both, log_level: info, output_dir: runs}
dataset: {train_folder: null, eval_folder: null, languages: [], lang_sampling_factor: 0.3, min_length: 2,
          max_length: 64, eval_sentences: 500, batch_size: 32, mixed_batches: false, vocab_size: 8000}
model: {hidden_size: 128, num_layers: 2, num_heads: 2, intermediate_size: 512, dropout: 0.0, attention_dropout: 0.0,
        masked_only: true}
train: {max_steps: 300, lr: 1.0e-3, warmup_steps: 30, weight_decay: 0.01, eval_every: 100, save_every: 100, seed: 0}
"""
# every key of those files that is no longer a key, and the new key its error must name
PRETRAIN_MOVES = {
    "name": "run.name",
    "output_dir": "run.output_dir",
    "resume": "run.resume",
    "fill_mask": "run.fill_mask",
    "data.block_size": "data.max_length",
}
MULTILINGUAL_MOVES = {
    "common.run_name": "run.name",
    "common.mode": "run.mode",
    "common.log_level": "run.log_level",
    "common.output_dir": "run.output_dir",
    "dataset.lang_sampling_factor": "sampling.alpha",
    "dataset.eval_sentences": "data.max_eval_texts",
    "dataset.batch_size": "train.batch_size",
    "dataset.mixed_batches": "sampling.mixed",
    **{
        f"dataset.{key}": f"data.{key}"
        for key in ("train_folder", "eval_folder", "languages", "min_length", "max_length", "vocab_size")
    },
}
# keys of the earlier command lines that no shipped file used
OTHER_MOVES = {
    schema.PretrainConfig: {"device": "run.device", "deepspeed": "run.deepspeed"},
    schema.MultilingualConfig: {"common.device": "run.device", "dataset.max_sentences": "data.max_train_texts"},
}


def _leaves(values: dict, where: str = "") -> dict:
    out = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else key
        out.update(_leaves(value, full) if isinstance(value, dict) else {full: value})
    return out


def _nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


@pytest.mark.parametrize(
    "cls, previous, moves",
    [
        (schema.PretrainConfig, PREVIOUS_PRETRAIN, PRETRAIN_MOVES),
        (schema.MultilingualConfig, PREVIOUS_MULTILINGUAL, MULTILINGUAL_MOVES),
    ],
    ids=["pretrain", "multilingual"],
)
def test_every_old_key_of_the_shipped_configs_names_its_new_key(tmp_path, cls, previous, moves):
    old = _leaves(yaml.safe_load(previous))
    assert sorted(key for key in old if key not in all_keys(cls)) == sorted(moves)  # the list above is complete
    path = tmp_path / "old.yaml"
    for key, new in {**moves, **OTHER_MOVES[cls]}.items():
        section, _, last = key.rpartition(".")
        # in the old file's place: the error names the new key (of the key itself, or of its old section and it)
        path.write_text(yaml.safe_dump(_nested(key, old.get(key, "x"))))
        with pytest.raises(ConfigError) as raised:
            schema.load_pretrain(path) if cls is schema.PretrainConfig else schema.load_multilingual(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: config key "), message
        if section in cls.RENAMED:  # an old section: named with its new name, and the old key inside it too
            new_section = cls.RENAMED[section]
            assert f"config key {section!r} is now {new_section!r}" in message, message
            assert f"{key} is now {new!r}" in message if key in cls.RENAMED else new == f"{new_section}.{last}"
        elif key in cls.RENAMED:
            assert f"config key {key!r} is now {new!r}" in message, message
        else:
            raise AssertionError(f"{key}: neither it nor its section is in {cls.__name__}.RENAMED")
        # on the command line, by its full old name or by its last part: the same
        if key in cls.RENAMED:
            for typed in {key, last}:
                if any(k.rsplit(".", 1)[-1] == typed for k in all_keys(cls)):
                    continue  # e.g. --batch_size, --max_length: still keys (train.batch_size, data.max_length)
                with pytest.raises(ConfigError, match=f"is now {new!r}"):
                    apply_overrides({}, [f"--{typed}", "1"], cls)
    # a section already renamed, with an old key left inside: named too
    if cls is schema.MultilingualConfig:
        for key, new in {
            "data.lang_sampling_factor": "sampling.alpha",
            "data.mixed_batches": "sampling.mixed",
            "data.eval_sentences": "data.max_eval_texts",
            "run.run_name": "run.name",
        }.items():
            with pytest.raises(ConfigError, match=f"'{key}' is now '{new}'"):
                from_dict(cls, _nested(key, 1))


@pytest.mark.parametrize("command", ["pretrain", "multilingual"])
def test_a_config_file_of_the_previous_format_stops_with_one_line(tmp_path, capsys, command):
    path = tmp_path / "old.yaml"
    path.write_text(PREVIOUS_PRETRAIN if command == "pretrain" else PREVIOUS_MULTILINGUAL)
    main = cli.main if command == "pretrain" else ml_cli.main
    assert main(["--config", str(path), "--output_dir", str(tmp_path / "runs")]) == 2
    line = _one_error(capsys)
    first = "config key 'name' is now 'run.name'" if command == "pretrain" else "config key 'common' is now 'run'"
    assert str(path) in line and first in line
    assert not (tmp_path / "runs").exists()


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

    with pytest.raises(ConfigError, match="ambiguous: say which of a.seed, b.seed"):
        apply_overrides({}, ["--seed", "1"], cls=Both)
    assert apply_overrides({}, ["--b.seed", "1"], cls=Both) == {"b": {"seed": "1"}}


def test_the_command_reports_errors_without_a_traceback(capsys, tmp_path):
    assert cli.main(["--config", str(CONFIGS / "tiny.yaml"), "--lr_max", "1"]) == 2
    assert "unknown config key 'lr_max'" in _one_error(capsys)
    assert (
        cli.main(
            [
                "--config",
                str(CONFIGS / "tiny.yaml"),
                "--corpus",
                "files",
                "--train_files",
                str(tmp_path / "nothing.txt"),
                "--output_dir",
                str(tmp_path / "runs"),
            ]
        )
        == 2
    )
    assert "nothing.txt: file not found" in _one_error(capsys)


def test_resume_refuses_a_run_with_other_settings(tmp_path):
    """`experiment_folder` returns (folder, where to resume from): None for a new run, "auto" for the
    folder's newest checkpoint (it used to return a flag, True/False)."""
    config = cli.load_config(CONFIGS / "tiny.yaml", ["--output_dir", str(tmp_path), "--resume", "none"])
    folder, start = common.experiment_folder(config.run, config.to_dict())
    assert start is None and (folder / "hparams.json").is_file()

    def resumed(run=None, **train):
        later = dataclasses.replace(
            config,
            run=dataclasses.replace(config.run, **(run or {"resume": str(folder)})),
            train=dataclasses.replace(config.train, **train),
        )
        return common.experiment_folder(later.run, later.to_dict())

    assert resumed(max_steps=999) == (folder, "auto")  # more steps: fine
    with pytest.raises(ConfigError, match=r"train.lr: 0.004 -> 0.5"):
        resumed(lr=0.5)
    with pytest.raises(ConfigError, match="no hparams.json"):
        resumed({"resume": str(tmp_path)})
    # auto: only a folder with a checkpoint is resumed
    assert resumed({"resume": "auto"})[1] is None
    (folder / "checkpoints" / training.checkpoint_name(5)).write_bytes(b"x")
    assert resumed({"resume": "auto"}) == (folder, "auto")
    ckpt = folder / "checkpoints" / training.checkpoint_name(5)
    assert resumed({"resume": str(ckpt)}) == (folder, ckpt)  # a checkpoint named: that one


def test_your_own_text_files(tmp_path):
    lines = [f"text number {i}" for i in range(100)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    config = from_dict(schema.TextData, {"corpus": "files", "train_files": [str(tmp_path / "train.txt")]})
    train, held_out = cli.corpus_texts(config, "train"), cli.corpus_texts(config, "eval")
    assert train == lines[:95] and held_out == lines[95:]  # no eval files: the last 5% are held out
    (tmp_path / "eval.txt").write_text("one\ntwo\n")
    config = dataclasses.replace(config, eval_files=[str(tmp_path / "eval.txt")], max_train_texts=10)
    assert cli.corpus_texts(config, "train") == lines[:10] and cli.corpus_texts(config, "eval") == ["one", "two"]


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


# --------------------------------------------------------------------------- user errors, as a user meets them


def _one_error(capsys) -> str:
    """The command's stderr, which must be exactly one `error: ...` line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def corpus(tmp_path, english_train):
    """Small text files of your own: 600 training sentences, 60 held-out ones."""
    (tmp_path / "train.txt").write_text("\n".join(english_train[:600]) + "\n")
    (tmp_path / "eval.txt").write_text("\n".join(english_train[600:660]) + "\n")
    return tmp_path


def tiny(tmp_path, *extra) -> list[str]:
    """A pretraining command of a few seconds on `corpus`'s files (checkpoints at steps 2 and 4; a constant
    learning rate, so that a run extended to more steps repeats the first ones exactly)."""
    return [
        "--corpus",
        "files",
        "--train_files",
        str(tmp_path / "train.txt"),
        "--eval_files",
        str(tmp_path / "eval.txt"),
        "--output_dir",
        str(tmp_path / "runs"),
        "--name",
        "t",
        "--max_steps",
        "4",
        "--max_eval_texts",
        "50",
        "--fill_mask",
        "0",
        "--vocab_size",
        "300",
        "--max_length",
        "32",
        "--batch_size",
        "4",
        "--hidden_size",
        "16",
        "--intermediate_size",
        "32",
        "--num_layers",
        "1",
        "--warmup_steps",
        "1",
        "--save_every",
        "2",
        "--eval_every",
        "2",
        "--keep_last",
        "5",
        "--schedule",
        "constant",
        "--no-progress",
        *extra,
    ]


def tiny_multilingual(tmp_path, *extra) -> list[str]:
    """A multilingual command of a few seconds on the shipped data (checkpoints at steps 2 and 4)."""
    return [
        *("--output_dir", str(tmp_path / "runs")),
        *SMALL_MULTILINGUAL,
        *"--languages eng,zul --max_length 32 --num_layers 1 --batch_size 8".split(),
        *"--max_steps 4 --warmup_steps 1 --save_every 2 --eval_every 2 --keep_last 5".split(),
        *extra,
    ]


COMMANDS = {"pretrain": (cli.main, tiny), "multilingual": (ml_cli.main, tiny_multilingual)}


def _folder(tmp_path) -> Path:
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return folder


def _losses(folder) -> dict:
    return {row["step"]: row["loss"] for row in training.read_metrics(folder) if "loss" in row}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hidden_size", "30", "--num_heads", "4"], "model.hidden_size=30 is not divisible by"),
        (["--dropout", "1.5"], "model.dropout must be a probability in [0, 1), got 1.5"),
        (["--max_steps", "-1"], "TrainConfig.max_steps must be a positive integer, got -1"),
    ],
)
def test_impossible_model_and_training_settings(tmp_path, capsys, command, extra, message):
    main, args = COMMANDS[command]
    assert main(args(tmp_path, *extra)) == 2
    assert message in _one_error(capsys)
    assert not (tmp_path / "runs").exists()  # stopped before anything was made


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--precision", "fp16"],
            "error: train.precision=fp16 needs a CUDA GPU (its loss scaler is CUDA-only), and this "
            "run is on cpu (run.device='auto'); use --precision bf16 or fp32",
        ),
        (["--device", "cuda"], "error: run.device='cuda': device 'cuda' asks for a CUDA GPU, but torch sees none"),
    ],
)
def test_a_gpu_setting_without_a_gpu(tmp_path, capsys, command, extra, message):
    main, args = COMMANDS[command]
    assert main(args(tmp_path, *extra)) == 2
    assert _one_error(capsys).startswith(message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_config_files_on_the_command_line(tmp_path, capsys, command):
    main, args = COMMANDS[command]
    listed = tmp_path / "list.yaml"
    listed.write_text("- run\n- data\n")
    noise = tmp_path / "noise.yaml"
    noise.write_bytes(bytes(range(256)) * 8)  # random-looking bytes, not UTF-8
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("train:\n\tmax_steps: 3\n")  # YAML's own error spans several lines
    for path, message in [
        (tmp_path / "missing.yaml", f"config file {tmp_path / 'missing.yaml'} not found"),
        (tmp_path, f"config file {tmp_path} is a folder; give a YAML file"),
        (noise, f"{noise}: not valid YAML ('utf-8' codec can't decode byte"),
        (tabs, f"{tabs}: not valid YAML (while scanning"),
        (listed, f"{listed}: the config must be a mapping of keys to values"),
    ]:
        assert main(["--config", str(path), *args(tmp_path)]) == 2
        assert _one_error(capsys).startswith(f"error: {message}")
    assert main([*args(tmp_path), "--config"]) == 2  # no file after it
    assert _one_error(capsys).startswith("error: argument --config: expected one argument (see python -m course_lib.")
    assert not (tmp_path / "runs").exists()


def test_a_corpus_smaller_than_one_block_or_one_batch(tmp_path, capsys, english_train):
    (tmp_path / "train.txt").write_text("Hi.\nYes.\n")
    (tmp_path / "eval.txt").write_text("A held-out line.\n")
    tokenizer = tokenization.train_tokenizer(english_train[:500], vocab_size=300, max_length=32)
    config = cli.load_config(None, tiny(tmp_path)[:-1])
    with pytest.raises(
        ConfigError,
        match=r"the training texts hold \d+ tokens, fewer than one block of "
        r"data.max_length=32: give more text or a smaller data.max_length",
    ):
        cli.prepare(config, tokenizer)
    assert cli.main(tiny(tmp_path)) == 2
    assert "fewer than one block of data.max_length=32" in _one_error(capsys)
    # enough for a few blocks, not for a batch of 32
    (tmp_path / "train.txt").write_text("\n".join(english_train[:5]) + "\n")
    assert cli.main(tiny(tmp_path, "--batch_size", "32", "--resume", "none")) == 2
    assert "fewer than one batch of train.batch_size=32" in _one_error(capsys)
    # held-out text too short to mask a single token
    (tmp_path / "train.txt").write_text("\n".join(english_train[:100]) + "\n")
    (tmp_path / "eval.txt").write_text("x\n")  # one token, not drawn by the fixed 15% masks
    assert cli.main(tiny(tmp_path, "--resume", "none")) == 2
    assert f"the held-out texts ({tmp_path / 'eval.txt'}) got no masked token" in _one_error(capsys)


def test_a_file_of_one_single_long_line(tmp_path, capsys):
    big = tmp_path / "big.txt"
    big.write_text(("word " * 2_000_000).strip() + "\n")  # 10 MB, one line
    args = tiny(tmp_path)
    args[args.index("--eval_files") : args.index("--eval_files") + 2] = []  # the last 5% of its lines held out
    args[args.index("--train_files") + 1] = str(big)
    assert cli.main(args) == 2
    line = _one_error(capsys)
    assert line.startswith(
        f"error: data.train_files: {big} holds 1 line (9,999,999 characters in it). "
        f"data.corpus=files reads one text per line"
    ), line
    assert "leaves no training text" in line and "break the text into lines" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_folder_below_a_regular_file(corpus, capsys, command):
    tmp_path = corpus  # the texts are read first: they are there
    main, args = COMMANDS[command]
    (tmp_path / "runs").write_text("a file, not a folder\n")
    assert main(args(tmp_path)) == 2
    line = _one_error(capsys)
    assert line == (
        f"error: run.output_dir={str(tmp_path / 'runs')!r}: cannot make the experiment folder there "
        f"({tmp_path / 'runs'} is a file, not a folder)"
    )
    assert (tmp_path / "runs").read_text() == "a file, not a folder\n"


def _unwritable(tmp_path) -> Path:
    """A folder this process cannot write in: a tmp folder made read-only with chmod, or, as root (for whom
    chmod changes nothing), a folder under /sys, which refuses new folders to everyone."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    where = Path("/sys") / f"course-test-{uuid.uuid4().hex[:8]}"
    try:
        where.mkdir()
    except OSError:
        return where
    where.rmdir()
    pytest.skip("running as root, and /sys accepts new folders here: no unwritable place to test with")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_folder_that_cannot_be_written(corpus, capsys, command):
    tmp_path = corpus  # the texts are read first: they are there
    main, args = COMMANDS[command]
    target = _unwritable(tmp_path) / "runs"
    try:
        assert main([*args(tmp_path), "--output_dir", str(target)]) == 2
    finally:
        if target.parent.parent == tmp_path:
            target.parent.chmod(0o755)
    line = _one_error(capsys)
    assert line.startswith(f"error: run.output_dir={str(target)!r}: cannot make the experiment folder there ("), line
    assert "permission denied" in line or "operation not permitted" in line or "read-only" in line, line


def test_an_unreadable_checkpoint_falls_back_to_the_one_before(corpus, capsys):
    """A torn newest checkpoint (truncated), then one overwritten with random bytes: auto-resume says so in one
    line and continues from the one before, with the very same losses; the file named with --resume is an
    error naming it."""
    assert cli.main(tiny(corpus)) == 0
    capsys.readouterr()
    folder = _folder(corpus)
    straight = _losses(folder)
    ckpts = folder / "checkpoints"
    four = ckpts / training.checkpoint_name(4)
    four.write_bytes(four.read_bytes()[:1000])  # truncated
    assert cli.main(tiny(corpus, "--max_steps", "6")) == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"warning: {four} is not a readable checkpoint (not a complete torch.save "
        f"archive: 1,000 bytes, truncated or overwritten?); trying the checkpoint "
        f"before it"
    ]
    assert f"resumed from {ckpts / training.checkpoint_name(2)} at step 2" in out
    resumed = _losses(folder)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6] and all(resumed[s] == straight[s] for s in straight)
    six = ckpts / training.checkpoint_name(6)
    six.write_bytes(os.urandom(5000))  # random bytes
    assert cli.main(tiny(corpus, "--max_steps", "8")) == 0
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and f"warning: {six} is not a readable checkpoint" in err
    assert f"resumed from {four} at step 4" in out
    six.write_bytes(os.urandom(5000))
    assert cli.main(tiny(corpus, "--max_steps", "8", "--resume", str(six))) == 2
    assert _one_error(capsys).startswith(
        f"error: {six} is not a readable checkpoint (not a complete torch.save archive"
    )
    assert torch.load(four, weights_only=False)["step"] == 4  # the good ones are untouched
    assert sorted(_losses(folder)) == list(range(1, 9))


def test_every_checkpoint_unreadable_is_one_error(corpus, capsys):
    assert cli.main(tiny(corpus)) == 0
    capsys.readouterr()
    ckpts = _folder(corpus) / "checkpoints"
    for path in training.list_checkpoints(ckpts):
        path.write_bytes(b"")
    assert cli.main(tiny(corpus, "--max_steps", "6")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" is not")[0] for line in lines[:2]] == [
        f"warning: {ckpts / training.checkpoint_name(4)}",
        f"warning: {ckpts / training.checkpoint_name(2)}",
    ]
    assert lines[2:] == [
        f"error: no readable checkpoint in {ckpts} (step-0000004.pt, step-0000002.pt cannot be "
        f"read); delete them or start afresh with --resume none"
    ]


def test_resuming_on_texts_that_changed(corpus, capsys):
    """The same settings, but the training file grew: the checkpoint's place in the data means nothing now."""
    assert cli.main(tiny(corpus)) == 0
    capsys.readouterr()
    with open(corpus / "train.txt", "a") as f:
        f.write("\n".join(["Some more text for the corpus."] * 200) + "\n")
    assert cli.main(tiny(corpus, "--max_steps", "6")) == 2
    four = _folder(corpus) / "checkpoints" / training.checkpoint_name(4)
    assert _one_error(capsys).startswith(f"error: cannot resume from {four}: the checkpoint's data stream was made for")
    assert sorted(_losses(_folder(corpus))) == [1, 2, 3, 4]  # nothing rewritten


@pytest.mark.parametrize("failure", ["ENOSPC", "torch"])
def test_a_disk_filling_up_during_a_save(corpus, capsys, monkeypatch, failure):
    """The second checkpoint cannot be written (torch.save raises what a full disk makes it raise: an OSError
    from the file, or torch's own RuntimeError from its zip writer): one error line, the first checkpoint
    intact and no half file left; after that the same command resumes and finishes."""
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"the first bytes")
            if failure == "ENOSPC":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                "data/0: file write failed"
            )
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert cli.main(tiny(corpus)) == 2
    ckpts = _folder(corpus) / "checkpoints"
    why = "no space left on device" if failure == "ENOSPC" else "torch could not write it: [enforce fail"
    assert _one_error(capsys).startswith(
        f"error: could not save checkpoint {ckpts / training.checkpoint_name(4)} ({why}"
    )
    assert [p.name for p in ckpts.iterdir()] == [training.checkpoint_name(2)]
    monkeypatch.setattr(torch, "save", real_save)
    assert cli.main(tiny(corpus)) == 0
    assert "resumed from" in capsys.readouterr().out and sorted(_losses(_folder(corpus))) == [1, 2, 3, 4]


def _interrupt_at(monkeypatch, cls, call: int):
    """Ctrl-C while the run draws its `call`-th batch (KeyboardInterrupt, as Python raises it for SIGINT)."""
    real = cls.__next__
    calls = []

    def draw(self):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(cls, "__next__", draw)
    return lambda: monkeypatch.setattr(cls, "__next__", real)


def test_ctrl_c_then_the_same_command_resumes(corpus, capsys, monkeypatch):
    restore = _interrupt_at(monkeypatch, training.BatchStream, 4)  # during update 4: 3 done, checkpoint at 2
    assert cli.main(tiny(corpus)) == common.STOPPED == 130
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        "stopped at step 3; run the same command again to resume (it continues from its checkpoint at step 2)"
    ]
    restore()
    assert cli.main(tiny(corpus)) == 0
    out = capsys.readouterr().out
    assert "(resuming)" in out and "at step 2" in out
    assert sorted(_losses(_folder(corpus))) == [1, 2, 3, 4]


def test_ctrl_c_before_the_first_checkpoint(corpus, capsys, monkeypatch):
    _interrupt_at(monkeypatch, training.BatchStream, 2)
    assert cli.main(tiny(corpus)) == 130
    folder = _folder(corpus)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"stopped at step 1, before the first checkpoint of {folder}; run the same command again to start afresh"
    ]


def test_a_file_of_an_earlier_version_names_all_its_old_keys_at_once(capsys):
    """models/brown-small/small.yaml is the config that trained the prepared model, in the old format: one run
    of the command names every key to move, not the first one only."""
    assert cli.main(["--config", str(ROOT / "models" / "brown-small" / "small.yaml")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and message.startswith("error: ")
    for old, new in [("name", "run.name"), ("output_dir", "run.output_dir"), ("data.block_size", "data.max_length")]:
        assert f"config key {old!r} is now {new!r}" in message, message


# --------------------------------------------------------------------------- precision, and the saved tokenizer


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_bf16_on_a_gpu_without_it_trains_in_fp16(monkeypatch, device):
    """A fake T4 (nothing runs on it): bf16 and "auto" resolve to fp16, the notice names the GPU, and hparams
    record fp16 with the precision asked for; on a fake A100 bf16 stays."""
    fake_gpu(monkeypatch, T4)
    for asked in ("bf16", "auto"):
        config = cli.load_config(CONFIGS / "tiny.yaml", ["--device", device, "--precision", asked])
        gpu = common.device_for(config.run, config.train)
        assert gpu == torch.device("cuda")
        resolved, hparams, notice = common.precision_for(config, gpu)
        assert resolved.train.precision == "fp16" and config.train.precision == asked  # the config is left alone
        assert hparams["train"]["precision"] == "fp16" and hparams["train"]["requested_precision"] == asked
        assert notice == f"train.precision={asked}: Tesla T4 has no bf16; training in fp16 with loss scaling"
    fake_gpu(monkeypatch, A100, native_bf16=True)
    config = cli.load_config(CONFIGS / "tiny.yaml", ["--device", device, "--precision", "bf16"])
    resolved, hparams, notice = common.precision_for(config, common.device_for(config.run, config.train))
    assert resolved.train.precision == "bf16" and "requested_precision" not in hparams["train"] and notice == ""


def test_on_a_cpu_precision_is_what_it_was():
    """fp32 (the default) and bf16 stay as asked and nothing is added to hparams; "auto" is fp32."""
    for asked, trains_in in [("fp32", "fp32"), ("bf16", "bf16"), ("auto", "fp32")]:
        config = cli.load_config(CONFIGS / "tiny.yaml", ["--device", "cpu", "--precision", asked])
        resolved, hparams, notice = common.precision_for(config, common.device_for(config.run, config.train))
        assert resolved.train.precision == trains_in and hparams["train"]["precision"] == trains_in
        assert hparams["train"].get("requested_precision") == (asked if asked != trains_in else None)
        assert bool(notice) == (asked != trains_in)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_run_records_its_precision_and_saves_portable_tokenizers(corpus, capsys, command):
    """--precision auto on the CPU: the run says it trains in fp32, hparams.json records fp32 and "auto"; the same
    run asked again with fp32 continues (the same run). Its tokenizer (and the pretraining export's) is saved
    with a config that transformers 4.x loads too."""
    main, args = COMMANDS[command]
    assert main(args(corpus, "--precision", "auto", "--device", "cpu")) == 0
    assert "train.precision=auto: training in fp32 on the CPU (" in capsys.readouterr().out
    folder = _folder(corpus)
    hparams = json.loads((folder / "hparams.json").read_text())
    assert (hparams["train"]["precision"], hparams["train"]["requested_precision"]) == ("fp32", "auto")
    assert main(args(corpus, "--precision", "fp32", "--device", "cpu")) == 0
    assert "(resuming)" in capsys.readouterr().out and _folder(corpus) == folder
    saved = [folder / "tokenizer"] + ([folder / "hf"] if command == "pretrain" else [])
    for where in saved:
        config = json.loads((where / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "RobertaTokenizerFast", where
        assert not set(config) & set(tokenization.LOADING_KEYS), where
