"""course_lib.device: one function decides where models train; every training entry point asks it."""

import ast
import json

import pytest
import torch
from tiny_runs import SMALL_MULTILINGUAL

from course_lib import device as device_lib
from course_lib import model as model_lib
from course_lib.paths import ROOT


def test_auto_is_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert device_lib.get_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert device_lib.get_device("auto") == device_lib.get_device()


def test_environment_and_argument_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert device_lib.get_device() == torch.device("cpu")
    assert device_lib.get_device("cpu") == torch.device("cpu")  # an explicit name wins over the variable


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_or_a_bad_name_is_named(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(device_lib.DeviceError, match="device 'cuda' asks for a CUDA GPU, but torch sees none"):
        device_lib.get_device()
    with pytest.raises(device_lib.DeviceError, match="device 'gpu0' .* is not a device"):
        device_lib.get_device("gpu0")
    assert issubclass(device_lib.DeviceError, ValueError)


class Spy:
    """Stands in for get_device: records the calls, and the devices models are moved to."""

    def __init__(self, monkeypatch):
        self.asked, self.moved = [], []
        real_to = model_lib.EncoderForMaskedLM.to

        def get_device(name=None):
            self.asked.append(name)
            return torch.device("cpu")

        def to(model, *args, **kwargs):
            self.moved.append(torch.device(args[0]) if args else kwargs.get("device"))
            return real_to(model, *args, **kwargs)

        monkeypatch.setattr(device_lib, "get_device", get_device)
        monkeypatch.setattr(model_lib.EncoderForMaskedLM, "to", to)


def test_the_command_line_trainer_asks_for_the_device_and_reports_against_the_baselines(tmp_path, monkeypatch, capsys):
    from course_lib.cli import pretrain as cli

    spy = Spy(monkeypatch)
    result = cli.run(
        cli.load_config(
            ROOT / "configs" / "tiny.yaml",
            [
                "--output_dir",
                str(tmp_path),
                "--max_train_texts",
                "2000",
                "--max_eval_texts",
                "200",
                "--vocab_size",
                "400",
                "--max_steps",
                "3",
                "--warmup_steps",
                "1",
                "--eval_every",
                "3",
                "--save_every",
                "3",
                "--fill_mask",
                "1",
                "--hidden_size",
                "16",
                "--intermediate_size",
                "32",
            ],
        ),
        progress=False,
    )
    assert spy.asked == ["auto"] and spy.moved == [torch.device("cpu")]
    report = json.loads((result["folder"] / "eval.json").read_text())
    for key in (
        "eval_loss",
        "accuracy",
        "no_context_loss",
        "no_context_accuracy",
        "neighbour_loss",
        "fill_mask_top1",
        "fill_mask_top5",
        "distinct_answers",
        "neighbour_fill_mask_top1",
    ):
        assert isinstance(report[key], (int, float)), key
    assert report["eval_loss"] == pytest.approx(result["eval"]["loss"])
    assert report["neighbour_loss"] < report["no_context_loss"]  # counts of the neighbours beat no context at all
    assert 0 <= report["fill_mask_top1"] <= report["fill_mask_top5"] <= 1
    out = capsys.readouterr().out
    assert "no-context baseline" in out and "neighbour-count model" in out and "distinct answers" in out
    assert (result["folder"] / "hf" / "config.json").is_file()
    assert json.loads((result["folder"] / "hf" / "config.json").read_text())["model_type"] == "roformer"


def test_the_multilingual_trainer_asks_for_the_device(tmp_path, monkeypatch):
    from course_lib.cli import multilingual as ml

    spy = Spy(monkeypatch)
    monkeypatch.chdir(ROOT)
    assert (
        ml.main(
            [
                *("--config", "configs/multilingual.yaml", "--output_dir", str(tmp_path)),
                *SMALL_MULTILINGUAL,
                *"--languages eng,zul --max_steps 2 --eval_every 2 --save_every 2 --warmup_steps 1".split(),
            ]
        )
        == 0
    )
    assert spy.asked == ["auto"] and spy.moved == [torch.device("cpu")]


MAKERS = {"EncoderForMaskedLM", "load_source", "from_pretrained", "random_body_like"}


def _statements(notebook):
    """(statement, its source) for every top-level statement of the notebook's code cells (magics skipped)."""
    cells = json.loads((ROOT / "solutions" / notebook).read_text())["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or any(line.lstrip().startswith(("!", "%")) for line in source.splitlines()):
            continue
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.For, ast.If, ast.With)):
                yield node, ast.get_source_segment(source, node), source


@pytest.mark.parametrize(
    "notebook", ["04_training_loop.ipynb", "05_multilingual_sampling.ipynb", "06_embedding_transfer.ipynb"]
)
def test_training_notebooks_put_their_models_on_the_device(notebook):
    """No GPU here, so read the notebooks that train: they ask `get_device()`, every statement that makes a model
    moves it to `device` (in the statement, or by name in the same cell), and every fill-mask pipeline runs there."""
    code = [segment for _, segment, _ in _statements(notebook)]
    assert any("device = get_device()" in segment for segment in code)
    made = 0
    for node, segment, cell in _statements(notebook):
        for call in ast.walk(node):
            if not isinstance(call, ast.Call):
                continue
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
            if name == "pipeline":
                assert any(k.arg == "device" and getattr(k.value, "id", None) == "device" for k in call.keywords), (
                    segment
                )
            receiver = getattr(call.func, "value", None)
            if name in MAKERS and "Tokenizer" not in getattr(receiver, "id", ""):  # AutoTokenizer.from_pretrained
                made += 1
                target = node.targets[0] if isinstance(node, ast.Assign) else None
                if isinstance(target, ast.Tuple):
                    target = target.elts[0]
                moved = ".to(device)" in segment or (isinstance(target, ast.Name) and f"{target.id}.to(device)" in cell)
                # a model handed straight to a function that copies it (the copy keeps the device)
                moved = moved or (name == "random_body_like" and "source" in segment)
                assert moved, f"{notebook}: the model made here does not go to the device:\n{segment}"
    assert made > 0
