"""course_lib.device: one function decides where models train; every training entry point asks it."""

import ast
import json

import pytest
import torch
from fake_gpu import A100, T4, fake_gpu
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


# --------------------------------------------------------------------------- precision (fake GPUs: no GPU here)

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
ASKED = ("fp32", "bf16", "fp16", "auto")


def test_a_gpu_without_bf16_units_trains_in_fp16(monkeypatch):
    """A T4 answers the plain `is_bf16_supported()` with yes (it emulates bf16); emulation must not count."""
    fake_gpu(monkeypatch, T4, native_bf16=False)
    assert torch.cuda.is_bf16_supported()
    assert not device_lib.bf16_supported(CUDA) and device_lib.half_precision(CUDA) == "fp16"
    assert [device_lib.resolve_precision(p, CUDA) for p in ASKED] == ["fp32", "fp16", "fp16", "fp16"]
    assert (
        device_lib.precision_notice("bf16", "fp16", CUDA)
        == "train.precision=bf16: Tesla T4 has no bf16; training in fp16 with loss scaling"
    )
    assert device_lib.precision_notice("fp16", "fp16", CUDA) == ""


def test_a_gpu_with_bf16_units_trains_in_bf16(monkeypatch):
    fake_gpu(monkeypatch, A100, native_bf16=True)
    assert device_lib.bf16_supported(CUDA) and device_lib.half_precision(CUDA) == "bf16"
    assert [device_lib.resolve_precision(p, CUDA) for p in ASKED] == ["fp32", "bf16", "fp16", "bf16"]
    assert (
        device_lib.precision_notice("auto", "bf16", CUDA)
        == f"train.precision=auto: training in bf16 on {A100} ({A100} has bf16 units)"
    )


def test_a_torch_without_the_emulation_argument(monkeypatch):
    """torch before 2.3: `is_bf16_supported()` takes no argument (and counted native bf16 only)."""
    fake_gpu(monkeypatch, "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert device_lib.half_precision(CUDA) == "fp16" and device_lib.resolve_precision("bf16", CUDA) == "fp16"


@pytest.mark.parametrize(
    "units, hidden, auto, why",
    [
        (
            {"amx": True, "avx512_bf16": True},
            256,
            "bf16",
            "AMX bf16 matrix units (as torch reports), and hidden size 256",
        ),
        ({"amx": True, "avx512_bf16": True}, 1024, "bf16", "and hidden size 1024: bf16 measured"),
        ({"amx": True, "avx512_bf16": True}, 128, "fp32", "but hidden size 128: bf16 measured 0.51-1.00x"),
        ({"amx": True, "avx512_bf16": True}, 255, "fp32", "but hidden size 255"),
        ({"amx": True, "avx512_bf16": True}, None, "fp32", "but no model size given"),
        ({"amx": False, "avx512_bf16": True}, 1024, "fp32", "AVX512-BF16 but no AMX"),
        ({"amx": False, "avx512_bf16": False}, 1024, "fp32", "no bf16 units"),
    ],
)
def test_the_cpu_keeps_what_it_asks_for_and_auto_follows_its_bf16_units(monkeypatch, units, hidden, auto, why):
    """fp32 and bf16 (autocast) as asked, fp16 refused; "auto" is bf16 only on a CPU with AMX and for a model of
    hidden size 256 or more (benchmarks/precision.py: bf16 slower than fp32 below, and on CPUs without AMX),
    and the notice says why."""
    monkeypatch.setattr(device_lib, "cpu_bf16_units", lambda: dict(units))
    assert device_lib.bf16_supported(CPU) == units["amx"] and device_lib.half_precision(CPU) == "bf16"
    resolved = [device_lib.resolve_precision(p, CPU, hidden) for p in ("fp32", "bf16", "auto")]
    assert resolved == ["fp32", "bf16", auto]
    chosen, reason = device_lib.auto_precision(CPU, hidden)
    assert chosen == auto and why in reason
    with pytest.raises(device_lib.DeviceError, match="precision='fp16' needs a CUDA GPU .*this device is cpu"):
        device_lib.resolve_precision("fp16", CPU, hidden)
    with pytest.raises(ValueError, match="precision='fp8': choose one of fp32, bf16, fp16, auto"):
        device_lib.resolve_precision("fp8", CPU)
    notice = device_lib.precision_notice("auto", auto, CPU, hidden)
    assert notice.startswith(f"train.precision=auto: training in {auto} on the CPU (") and why in notice


@pytest.mark.parametrize("hidden, expected", [(128, "fp32"), (256, "bf16")])
def test_the_loop_and_the_command_line_weigh_the_models_size(monkeypatch, tmp_path, hidden, expected):
    """On a CPU with AMX, "auto" asks the model's hidden size: the plain loop and `train` read it from the model,
    the command line from config.model; the demo's 128 trains in fp32, a 256 model in bf16."""
    from course_lib import training
    from course_lib.cli import common, schema
    from course_lib.model import EncoderConfig, EncoderForMaskedLM
    from course_lib.paths import course_path

    monkeypatch.setattr(device_lib, "cpu_bf16_units", lambda: {"amx": True, "avx512_bf16": True})
    model = EncoderForMaskedLM(
        EncoderConfig(vocab_size=50, max_length=8, hidden_size=hidden, num_layers=1, num_heads=2, intermediate_size=8)
    )
    assert training.hidden_size(model) == hidden and training.hidden_size(torch.nn.Linear(2, 2)) is None
    assert training.PlainLoop(model, training.TrainConfig(precision="auto")).precision == expected
    assert training.PlainLoop(torch.nn.Linear(2, 2), training.TrainConfig(precision="auto")).precision == "fp32"
    config = schema.load_pretrain(course_path("configs", "tiny.yaml"), [f"--model.hidden_size={hidden}"])
    config, hparams, notice = common.precision_for(config, CPU)
    assert config.train.precision == expected and hparams["train"]["requested_precision"] == "auto"
    assert f"hidden size {hidden}" in notice


@pytest.mark.real_cpu_units
def test_this_machines_cpu_units_are_what_torch_reports():
    units = device_lib.cpu_bf16_units()
    assert units == {"amx": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}


@pytest.mark.parametrize("asked", ["bf16", "auto"])
def test_the_plain_loop_on_a_t4_scales_an_fp16_loss(monkeypatch, asked):
    """training.PlainLoop resolves the config's precision for its model's device: on a T4, bf16 or "auto" train
    in fp16 with a GradScaler. (The model stays on the CPU; the loop is only told it is on the GPU.)"""
    from course_lib import training

    fake_gpu(monkeypatch, T4)
    monkeypatch.setattr(training, "_device", lambda model: CUDA)
    model = torch.nn.Linear(2, 2)
    loop = training.PlainLoop(model, training.TrainConfig(precision=asked))
    assert loop.precision == "fp16" and isinstance(loop.scaler, torch.amp.GradScaler)
    assert training.make_scaler("auto", CUDA) is not None
    monkeypatch.undo()  # the CPU again: bf16 autocast, no scaler, as before
    cpu_loop = training.PlainLoop(model, training.TrainConfig(precision="bf16"))
    assert cpu_loop.precision == "bf16" and cpu_loop.scaler is None
