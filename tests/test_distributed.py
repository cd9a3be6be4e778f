"""Notebook 07: DeepSpeed config checks, ZeRO 0-3 in one CPU process (train, save, resume = same losses),
the command line under --deepspeed, and the deepspeed / torchrun launchers with two processes."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_gpu import A100, T4, fake_gpu

from course_lib import data, masking, tokenization, training
from course_lib import distributed as D
from course_lib import model as M
from course_lib.paths import ROOT
from course_lib.profiles import set_seed

CUDA = torch.device("cuda")

# --------------------------------------------------------------------------- config


def test_ds_config_holds_what_was_asked():
    config = D.ds_config(16, grad_accum=4, world_size=8, bf16=True, stage=2, offload_optimizer=True, max_grad_norm=0.5)
    assert config["train_batch_size"] == 16 * 4 * 8
    assert config["train_micro_batch_size_per_gpu"] == 16 and config["gradient_accumulation_steps"] == 4
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["gradient_clipping"] == 0.5
    fp16 = D.ds_config(8, fp16=True, initial_scale_power=12)
    assert fp16["fp16"]["enabled"] and fp16["fp16"]["loss_scale"] == 0 and fp16["fp16"]["initial_scale_power"] == 12


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bf16=True, fp16=True), "both true"),
        (dict(train_batch_size=100, world_size=2, grad_accum=2), "train_batch_size=100 but .* 8 x 2 x 2 = 32"),
        (dict(offload_optimizer=True), "offload_optimizer needs ZeRO stage 1, 2 or 3"),
        (dict(stage=2, offload_params=True), "offload_param needs ZeRO stage 3 .stage is 2"),
        (dict(stage=4), "stage=4"),
        (dict(max_grad_norm=-1.0), "gradient_clipping must be a number >= 0"),
        (dict(grad_accum=0), "gradient_accumulation_steps must be a positive integer"),
        (dict(scheduler={"lr": 1e-3}), "missing: total_steps, warmup_steps"),
    ],
)
def test_ds_config_refuses_what_cannot_work(kwargs, message):
    with pytest.raises(D.DSConfigError, match=message):
        D.ds_config(8, **kwargs)


def test_check_names_unresolved_auto_values():
    with pytest.raises(D.DSConfigError, match="train_micro_batch_size_per_gpu = 'auto'"):
        D.check_ds_config({"train_micro_batch_size_per_gpu": "auto", "train_batch_size": 8})
    with pytest.raises(D.DSConfigError, match="at least two"):
        D.check_ds_config({"train_batch_size": 8})


@pytest.mark.parametrize("name", ["ds_zero0", "ds_zero1", "ds_zero2", "ds_zero3", "ds_zero3_offload"])
def test_shipped_configs_resolve_from_the_training_config(name):
    config = D.load_ds_config(ROOT / "configs" / f"{name}.json")
    train = training.TrainConfig(batch_size=16, grad_accum=2, max_grad_norm=0.5, precision="bf16")
    resolved = D.resolve_ds_config(config, train, world_size=4)
    assert resolved["train_batch_size"] == 16 * 2 * 4 and resolved["gradient_clipping"] == 0.5
    assert resolved["bf16"]["enabled"] is True and resolved["fp16"]["enabled"] is False
    assert config["train_batch_size"] == "auto"  # the file's dict is left alone


def test_resolve_refuses_a_value_that_contradicts_the_training_config():
    with pytest.raises(D.DSConfigError, match="train_micro_batch_size_per_gpu=8 but train.batch_size=32"):
        D.resolve_ds_config({"train_micro_batch_size_per_gpu": 8}, training.TrainConfig(batch_size=32))
    with pytest.raises(D.DSConfigError, match="bf16.enabled=True but train.precision='fp32'"):
        D.resolve_ds_config({"bf16": {"enabled": True}}, training.TrainConfig())


@pytest.mark.parametrize("asked", ["bf16", "auto", "fp16"])
def test_a_gpu_without_bf16_gets_deepspeed_fp16_with_dynamic_loss_scaling(monkeypatch, asked):
    """On a T4 the "auto" bf16 / fp16 entries of the shipped configs follow the precision the run trains in:
    fp16, whose loss DeepSpeed scales dynamically (loss_scale 0), whether the run asked for bf16, auto or fp16
    (the command line hands over the resolved fp16; a notebook may hand over what it asked for)."""
    fake_gpu(monkeypatch, T4)
    train = training.TrainConfig(batch_size=16, precision=asked)
    for name in ["ds_zero0", "ds_zero1", "ds_zero2", "ds_zero3", "ds_zero3_offload"]:
        resolved = D.resolve_ds_config(D.load_ds_config(ROOT / "configs" / f"{name}.json"), train, device=CUDA)
        assert resolved["fp16"]["enabled"] is True and resolved["bf16"]["enabled"] is False, name
        assert resolved["fp16"]["loss_scale"] == 0, name
    if asked == "bf16":  # a file that insists on bf16 contradicts the run, and the error says why
        with pytest.raises(D.DSConfigError, match=r"bf16.enabled=True but train.precision='bf16' \(here fp16\)"):
            D.resolve_ds_config({"bf16": {"enabled": True}}, train, device=CUDA)


def test_a_gpu_with_bf16_and_the_cpu_keep_deepspeed_bf16(monkeypatch):
    cpu = D.resolve_ds_config({}, training.TrainConfig(precision="bf16"), device=torch.device("cpu"))
    assert cpu["bf16"]["enabled"] is True and cpu["fp16"]["enabled"] is False
    assert D.resolve_ds_config({}, training.TrainConfig(precision="auto"))["bf16"]["enabled"] is False  # fp32
    fake_gpu(monkeypatch, A100, native_bf16=True)
    gpu = D.resolve_ds_config({}, training.TrainConfig(precision="auto"), device=CUDA)
    assert gpu["bf16"]["enabled"] is True and gpu["fp16"]["enabled"] is False


def test_load_ds_config_names_the_file(tmp_path):
    with pytest.raises(D.DSConfigError, match="nope.json not found"):
        D.load_ds_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ stage: 2 }")
    with pytest.raises(D.DSConfigError, match="bad.json: not valid JSON"):
        D.load_ds_config(bad)


def test_rank_shard_splits_global_batches_and_keeps_one_position():
    shards = [D.RankShard(training.BatchStream(40, 8, seed=3), rank, 2) for rank in range(2)]
    whole = training.BatchStream(40, 8, seed=3)
    for _ in range(7):  # across an epoch boundary
        assert torch.equal(torch.cat([next(shards[0]), next(shards[1])]), next(whole))
    assert shards[0].state_dict() == whole.state_dict()
    with pytest.raises(ValueError, match="does not split over 3"):
        next(D.RankShard(training.BatchStream(40, 8), 0, 3))


def test_zero_memory_is_the_papers_accounting():
    psi = 7_500_000_000  # the paper's example: 7.5B parameters, 64 GPUs, K = 12 -> 120 GB, 31.4, 16.6, 1.9
    expected = {0: 120e9, 1: 31.4e9, 2: 16.6e9, 3: 1.9e9}
    for stage, total in expected.items():
        assert D.zero_memory(psi, stage, 64)["total"] == pytest.approx(total, abs=0.05e9)  # the paper rounds to 0.1 GB
    one = D.zero_memory(1000, 3, 1)
    assert one == {"params": 2000, "grads": 2000, "optimizer": 12000, "total": 16000}
    with pytest.raises(ValueError, match="stage=5"):
        D.zero_memory(10, 5, 1)


# --------------------------------------------------------------------------- training in one process


@pytest.fixture(scope="module")
def tiny():
    texts = data.english_sentences("train", limit=1500)
    tokenizer = tokenization.train_tokenizer(texts, 400, max_length=32)
    blocks = masking.pack_sequences(
        tokenizer(texts, verbose=False)["input_ids"], 32, pad_token_id=tokenizer.pad_token_id
    )
    D.init_single_process()
    return tokenizer, blocks


def _model(tokenizer, **changes):
    set_seed(0)
    return M.EncoderForMaskedLM(
        M.EncoderConfig(
            vocab_size=len(tokenizer),
            max_length=32,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            **changes,
        )
    )


def _run(tiny, folder, ds=None, resume="auto", max_steps=6, **overrides):
    tokenizer, blocks = tiny
    settings = dict(
        max_steps=max_steps,
        batch_size=8,
        grad_accum=2,
        lr=2e-3,
        warmup_steps=2,
        save_every=3,
        eval_every=1000,
        keep_last=5,
    )
    config = training.TrainConfig(**{**settings, **overrides})
    model = _model(tokenizer)
    loop = D.DeepSpeedLoop(model, config, ds) if ds is not None else None
    rows = {}
    training.train(
        model,
        blocks,
        None,
        config,
        collator=masking.MLMCollator(tokenizer, seed=0),
        folder=folder,
        resume=resume,
        progress=False,
        loop=loop,
        on_step=lambda step, row: rows.__setitem__(step, row),
    )
    return rows, loop


@pytest.mark.parametrize("stage, bf16", [(0, False), (1, True), (2, True), (3, True)])
def test_zero_stages_train_save_and_resume_with_the_same_losses(tiny, tmp_path, stage, bf16):
    ds = D.ds_config(8, 2, bf16=bf16, stage=stage)
    straight, loop = _run(tiny, tmp_path / "straight", ds)
    assert loop.stage == stage and all(math.isfinite(row["loss"]) for row in straight.values())
    assert [p.name for p in training.list_checkpoints(tmp_path / "straight" / "checkpoints")] == [
        "step-0000003",
        "step-0000006",
    ]
    assert straight[6]["loss"] < straight[1]["loss"]
    # a run killed after its step-3 checkpoint, started again
    killed = tmp_path / "killed" / "checkpoints"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-0000003", killed / "step-0000003")
    (killed / "latest").write_text("step-0000003")
    resumed, _ = _run(tiny, tmp_path / "killed", ds)
    assert sorted(resumed) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step]["loss"] == straight[step]["loss"], step
        assert resumed[step]["lr"] == straight[step]["lr"]


def test_stage_0_matches_the_plain_loop(tiny, tmp_path):
    plain, _ = _run(tiny, tmp_path / "plain")
    deep, _ = _run(tiny, tmp_path / "ds", D.ds_config(8, 2))
    for step in plain:
        assert deep[step]["loss"] == pytest.approx(plain[step]["loss"], rel=1e-6, abs=1e-6)
        assert deep[step]["lr"] == plain[step]["lr"]


def test_deepspeeds_own_scheduler_runs_one_update_behind_the_course_schedule(tiny, tmp_path):
    """WarmupDecayLR (linear) has the course's shape, but update s uses the rate the course gives update s - 1
    (its first two updates both have rate 0): one reason the loop passes its own scheduler."""
    ds = D.ds_config(8, 2, scheduler={"lr": 2e-3, "warmup_steps": 2, "total_steps": 6})
    rows, loop = _run(tiny, tmp_path, ds)
    assert not loop.own_scheduler
    lrs = [rows[s]["lr"] for s in sorted(rows)]
    course = [2e-3 * training.lr_factor(s - 1, 2, 6) for s in sorted(rows)]
    assert lrs[0] == 0.0 and lrs[1:] == pytest.approx(course[:-1], abs=1e-12)


def test_measured_memory_matches_the_accounting_at_one_process(tiny, tmp_path):
    _, loop = _run(tiny, tmp_path, D.ds_config(8, 2, bf16=True, stage=2), max_steps=1, save_every=1)
    psi = sum(p.numel() for p in loop.module.parameters())
    measured = D.measured_memory(loop.engine)  # after the update: the gradients are gone
    assert measured == {
        "params": 2 * psi,
        "grads": 0,
        "master": 4 * psi,
        "optimizer_states": 8 * psi,
        "offloaded": False,
        "offload_grads": 0,
    }


@pytest.mark.parametrize(
    "stage, precision, offload",
    [(0, "fp32", False), (1, "fp32", False), (2, "bf16", False), (3, "fp32", False), (2, "fp32", True)],
)
def test_memory_watched_during_an_update_is_the_accounting_at_one_process(tiny, tmp_path, stage, precision, offload):
    """During an update (watch_memory: before every engine.step), one process holds the accounting at N = 1,
    gradients included; offload puts the optimizer states in CPU memory."""
    ds = D.ds_config(8, 2, bf16=precision == "bf16", stage=stage, offload_optimizer=offload)
    _, loop = _run(tiny, tmp_path, ds, max_steps=1, save_every=1000)  # no checkpoint: only the engine
    tokenizer, blocks = tiny
    collate = masking.MLMCollator(tokenizer, seed=1)
    snapshots = D.watch_memory(loop.engine)
    loop.step([collate([blocks[i] for i in range(8)]), collate([blocks[i] for i in range(8, 16)])])
    D.unwatch_memory(loop.engine)
    assert len(snapshots) == 2  # one per micro-batch
    psi = sum(p.numel() for p in loop.module.parameters())
    largest = max(p.numel() for p in loop.module.parameters())
    peak = D.peak_memory(snapshots)
    assert D.accounting_gaps(peak, psi, stage, 1, precision, largest, offload) == []
    assert peak["grads"] > 0 and peak["offloaded"] == offload and (peak["offload_grads"] > 0) == offload
    # the same memory, told it was two processes' share, is refused, with the numbers
    if stage:
        gaps = D.accounting_gaps(peak, psi, stage, 2, precision, largest, offload)
        assert gaps and any("optimizer states" in gap and "accounting" in gap for gap in gaps)
    loop.engine.step()  # the watch is gone: a plain step again
    assert len(snapshots) == 2


def test_ds_accounting_follows_the_number_format():
    assert (
        D.ds_accounting(10, 0, 1, "bf16")
        == D.zero_memory(10, 0, 1)
        == {"params": 20, "grads": 20, "optimizer": 120, "total": 160}
    )
    assert D.ds_accounting(10, 0, 1, "fp32") == {"params": 40, "grads": 40, "optimizer": 80, "total": 160}
    assert D.ds_accounting(10, 1, 2, "fp32") == {"params": 40, "grads": 40, "optimizer": 60, "total": 140}
    assert D.ds_accounting(10, 3, 2, "fp16")["total"] == 80
    with pytest.raises(ValueError, match="precision='tf32'"):
        D.ds_accounting(10, 0, 1, "tf32")
    with pytest.raises(D.DSConfigError, match="persistence_threshold is a ZeRO-3 setting"):
        D.ds_config(8, stage=2, persistence_threshold=0)
    assert (
        D.ds_config(8, stage=3, persistence_threshold=0)["zero_optimization"]["stage3_param_persistence_threshold"] == 0
    )
    with pytest.raises(ValueError, match="no memory snapshots"):
        D.peak_memory([])


def test_load_ds_checkpoint_errors(tiny, tmp_path):
    _, loop = _run(tiny, tmp_path, D.ds_config(8, 2), max_steps=1, save_every=1)
    with pytest.raises(FileNotFoundError, match="no DeepSpeed checkpoint folder"):
        D.load_ds_checkpoint(loop.engine, tmp_path / "checkpoints" / "step-0000009")
    path = D.save_ds_checkpoint(loop.engine, tmp_path / "again", 7, {"stream": {"epoch": 1}})
    state = D.load_ds_checkpoint(loop.engine, path)
    assert state["step"] == 7 and state["data"] == {"stream": {"epoch": 1}}


@pytest.mark.slow  # SIGKILLs a DeepSpeed run in a separate process
def test_a_killed_deepspeed_save_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    (folder / "step-0000003").mkdir(parents=True)
    (folder / "step-0000006").mkdir()  # written, but `latest` still names step 3: the save was killed
    (folder / "latest").write_text("step-0000003")
    assert training.list_checkpoints(folder) == [folder / "step-0000003"]
    training.prune_checkpoints(folder, keep_last=3)
    assert not (folder / "step-0000006").exists() and (folder / "step-0000003").is_dir()


# --------------------------------------------------------------------------- the command line and the launchers


def _cli(args, tmp_path, launcher=(), check=True):
    env = {**D.environment_for_a_launch(), "COURSE_PROFILE": "ci"}
    command = [*launcher, "course_lib.train"] if launcher else [sys.executable, "-m", "course_lib.train"]
    done = subprocess.run(
        [
            *command,
            "--config",
            "configs/tiny.yaml",
            "--max_train_texts",
            "3000",
            "--max_eval_texts",
            "100",
            "--output_dir",
            str(tmp_path),
            "--no-progress",
            "--fill_mask",
            "0",
            "--log_every",
            "1",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _losses(tmp_path):
    (folder,) = [p for p in Path(tmp_path).iterdir() if p.is_dir()]
    return {row["step"]: row["loss"] for row in training.read_metrics(folder) if "loss" in row}, folder


@pytest.mark.slow  # two command-line runs with DeepSpeed, each in its own process
def test_command_line_deepspeed_run_and_resume(tmp_path):
    _cli(
        ["--deepspeed", "configs/ds_zero2.json", "--precision", "bf16", "--max_steps", "6", "--save_every", "3"],
        tmp_path,
    )
    straight, folder = _losses(tmp_path)
    assert sorted(straight) == [1, 2, 3, 4, 5, 6]
    assert (folder / "hf" / "config.json").is_file()
    done = _cli(
        [
            "--deepspeed",
            "configs/ds_zero2.json",
            "--precision",
            "bf16",
            "--max_steps",
            "6",
            "--save_every",
            "3",
            "--resume",
            str(folder / "checkpoints" / "step-0000003"),
        ],
        tmp_path,
    )
    assert "resumed from" in done.stdout
    again, _ = _losses(tmp_path)
    assert again == straight


def test_command_line_names_a_missing_deepspeed_config(tmp_path):
    done = _cli(["--deepspeed", "configs/nope.json"], tmp_path, check=False)
    assert done.returncode == 2 and "configs/nope.json not found" in done.stderr
    assert not list(tmp_path.iterdir())  # stopped before making anything


def test_command_line_refuses_a_contradicting_deepspeed_config(tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 1}}))
    done = _cli(["--deepspeed", str(config)], tmp_path / "runs", check=False)
    assert done.returncode == 2
    assert "ds.json: train_micro_batch_size_per_gpu=4 but train.batch_size=16" in done.stderr


@pytest.mark.slow  # a launcher starting two processes
@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_two_processes_under_a_launcher(tmp_path, launcher):
    """Two CPU processes (gloo): the deepspeed launcher with ZeRO-3, torchrun with DistributedDataParallel."""
    bin_dir = Path(sys.executable).parent
    if launcher == "deepspeed":
        command = [str(bin_dir / "deepspeed"), "--num_gpus", "2", "--master_port", str(D.free_port()), "--module"]
        extra = ["--deepspeed", "configs/ds_zero3.json", "--precision", "bf16"]
    else:
        command = [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", str(D.free_port()), "-m"]
        extra = []
    done = _cli([*extra, "--max_steps", "4", "--save_every", "2", "--batch_size", "16"], tmp_path, launcher=command)
    losses, folder = _losses(tmp_path)
    assert sorted(losses) == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses.values())
    assert done.stdout.count("experiment folder:") == 1  # process 0 speaks
    assert "2 process" in done.stdout
    assert len(training.list_checkpoints(folder / "checkpoints")) == 2
    assert (folder / "hf" / "config.json").is_file()


def test_notebook_07_trains_in_the_format_of_its_device():
    """No GPU here, so read the notebook: its DeepSpeed runs take `auto_precision(device)` (fp16 on a T4, fp32 on
    a CPU without AMX) instead of a hard-coded bf16; the command line runs from the shipped configs' absolute
    paths, in any folder; and no cell whose output is checked prints the precision (it differs between a CPU, a
    T4 and an A100)."""
    cells = json.loads((ROOT / "solutions" / "07_deepspeed_scaling.ipynb").read_text())["cells"]
    code = {cell["id"]: "".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"}
    everything = "\n".join(code.values())
    assert "precision, why = auto_precision(device)" in everything and "bf16=True" not in everything
    words = " ".join(everything.split())
    assert words.count('bf16=precision == "bf16", fp16=precision == "fp16"') == 2  # the engine shown, resume
    assert '"CUDA_VISIBLE_DEVICES": ""' in code["code-launch"]  # the two processes share the CPU, not a GPU
    assert "cwd=" not in code["code-28"] and 'paths.CONFIGS / "ds_zero2.json"' in code["code-28"]
    assert '"--precision", precision' in code["code-28"]
    for source in code.values():
        if "NBVAL_CHECK_OUTPUT" in source:
            assert "precision" not in source and "bf16" not in source and "fp16" not in source, source


# --------------------------------------------------------------------------- ZeRO with two processes (07, Part 5)


def test_zero_command_line_refuses_what_it_cannot_run(tmp_path, capsys):
    from course_lib.cli import zero

    for setup, message in [("4", "setup '4'"), ("0+offload", "setup '0\\+offload'"), ("2+fast", "setup '2\\+fast'")]:
        with pytest.raises(SystemExit) as stop:
            zero.main(["--job", str(tmp_path / "job.pt"), "--out", str(tmp_path / "r.json"), "--setups", setup])
        assert stop.value.code == 2
        assert __import__("re").search(message, capsys.readouterr().err)
    with pytest.raises(SystemExit):
        zero.main(["--job", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "r.json")])
    assert "missing.pt: no such file" in capsys.readouterr().err
    assert zero.parse_setup("3+offload") == {"stage": 3, "offload_optimizer": True}
    batch = {"input_ids": torch.arange(16).view(8, 2)}
    parts = zero.rank_rows(batch, 1, 2, 2)
    assert [p["input_ids"][:, 0].tolist() for p in parts] == [[8, 10], [12, 14]]
    with pytest.raises(ValueError, match="does not split over 3 processes x 2"):
        zero.rank_rows(batch, 0, 3, 2)


def _torchrun_zero(job, out, processes, *args, timeout=600):
    """`torchrun --nproc_per_node N -m course_lib.cli.zero` on the CPU, without this process's rank variables."""
    env = D.environment_for_a_launch()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port"]
    command += [str(D.free_port()), "-m", "course_lib.cli.zero", "--job", str(job), "--out", str(out), *args]
    done = subprocess.run(
        command, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(Path(out).read_text())


@pytest.mark.slow  # two processes, each training five ZeRO setups
def test_two_processes_split_the_states_as_the_accounting_says_with_the_plain_loops_losses(tiny, tmp_path):
    from course_lib.cli import zero

    tokenizer, blocks = tiny
    model = _model(tokenizer, dropout=0.0, attention_dropout=0.0, masked_only=True)  # no randomness in the steps
    config = training.TrainConfig(max_steps=3, batch_size=8, grad_accum=2, lr=2e-3, warmup_steps=1)
    collate = masking.MLMCollator(tokenizer, seed=0)
    batches = [collate([blocks[i] for i in range(16 * k, 16 * k + 16)]) for k in range(3)]
    # the two halves hold different numbers of masked tokens: a per-process mean would not be the global one
    assert any(int((b["labels"][:8] != -100).sum()) != int((b["labels"][8:] != -100).sum()) for b in batches)
    job = zero.save_job(tmp_path / "job.pt", model, config, batches)
    plain = training.PlainLoop(model, config)
    reference = [
        plain.step([{k: v[:8] for k, v in b.items()}, {k: v[8:] for k, v in b.items()}])["loss"] for b in batches
    ]

    results = _torchrun_zero(job, tmp_path / "results.json", 2, "--precision", "fp32")
    assert results["world_size"] == 2 and results["precision"] == "fp32" and results["why"] == "asked for"
    psi, largest = results["n_params"], results["largest_tensor"]
    assert psi == model.num_parameters() and largest == max(p.numel() for p in model.parameters())
    assert [s["setup"] for s in results["setups"]] == list(zero.SETUPS)
    for s in results["setups"]:
        losses = [s["losses"][str(step)] for step in (1, 2, 3)]
        assert losses == pytest.approx(reference, abs=1e-5), s["setup"]
        assert len(s["memory"]) == 2
        for memory in s["memory"]:
            offload = s.get("offload_optimizer", False)
            assert D.accounting_gaps(memory, psi, s["stage"], 2, "fp32", largest, offload) == [], s["setup"]
    by_setup = {s["setup"]: s["memory"] for s in results["setups"]}
    assert all(m["optimizer_states"] == pytest.approx(4 * psi, rel=0.01) for m in by_setup["1"])  # Adam: 8 bytes / 2
    assert all(m["params"] == pytest.approx(2 * psi, rel=0.01) for m in by_setup["3"])  # fp32 weights: 4 bytes / 2
    assert all(m["offloaded"] and m["offload_grads"] > 0 for m in by_setup["2+offload"])


def test_a_launcher_of_one_process_keeps_its_port(tiny, tmp_path):
    """torchrun --nproc_per_node 1: the process joins the store torchrun's agent listens on (it hung when
    init_distributed, seeing WORLD_SIZE=1, moved it to a free port of its own)."""
    from course_lib.cli import zero

    tokenizer, blocks = tiny
    config = training.TrainConfig(max_steps=1, batch_size=4, grad_accum=1, lr=1e-3, warmup_steps=0)
    job = zero.save_job(
        tmp_path / "job.pt", _model(tokenizer), config, [masking.MLMCollator(tokenizer)(list(blocks[:4]))]
    )
    assert _torchrun_zero(job, tmp_path / "r.json", 1, "--setups", "0", timeout=120)["world_size"] == 1
