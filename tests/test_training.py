"""course_lib.training: optimizer groups, schedules, one step, evaluation, checkpoints, experiment folders,
and the loop's exact resume (in-process, and across a SIGKILL in a separate process)."""

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_lib import masking, tokenization, training
from course_lib import model as M
from course_lib.paths import ROOT
from course_lib.training import TrainConfig


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, english_train):
    tok = tokenization.train_tokenizer(english_train[:3000], vocab_size=500, max_length=32)
    folder = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(str(folder))
    tok.folder = folder
    return tok


@pytest.fixture(scope="module")
def blocks(tokenizer, english_train):
    ids = tokenizer(english_train[:400], verbose=False)["input_ids"]
    return masking.pack_sequences(ids, 32)


@pytest.fixture(scope="module")
def eval_data(tokenizer, english_train):
    ids = tokenizer(english_train[400:460], verbose=False)["input_ids"]
    rows = masking.pack_sequences(ids, 32, drop_last=False)
    return training.eval_batches(masking.fixed_eval_masks(list(rows), tokenizer, seed=0), 8, tokenizer.pad_token_id)


def small_model(vocab=500, seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32)
    return M.EncoderForMaskedLM(M.EncoderConfig(**{**config, **kwargs}))


# --------------------------------------------------------------------------- optimizer and schedule


def test_no_weight_decay_on_norms_and_biases():
    model = small_model()
    model.layers[0].attention.query.weight.requires_grad_(False)
    decay, no_decay = training.param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "word_embeddings.weight" in decay_names and "layers.1.feed_forward.up.weight" in decay_names
    assert "layers.0.attention.query.weight" not in decay_names | no_decay_names  # frozen: left out
    assert {
        "embedding_norm.weight",
        "embedding_norm.bias",
        "layers.0.attention_norm.weight",
        "head.layer_norm.weight",
        "head.decoder.bias",
        "layers.1.feed_forward.up.bias",
    } <= no_decay_names
    assert all("norm" in n or n.endswith("bias") for n in no_decay_names)
    assert not any("norm" in n or n.endswith("bias") for n in decay_names)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_matches_transformers(schedule):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    reference = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}[schedule]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    theirs = reference(optimizer, num_warmup_steps=7, num_training_steps=50)
    for step in range(51):  # (past the end, transformers' cosine rises again; ours stays at the minimum)
        assert training.lr_factor(step, 7, 50, schedule) == pytest.approx(theirs.get_last_lr()[0], abs=1e-12), step
        optimizer.step()
        theirs.step()


def test_schedule_shape_and_min_lr():
    f = [training.lr_factor(s, 10, 110, "cosine", min_lr_ratio=0.1) for s in range(120)]
    assert f[0] == 0 and f[5] == 0.5 and f[10] == 1.0
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1) and f[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert [training.lr_factor(s, 0, 10, "constant") for s in (0, 5, 20)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"max_steps": 0}, "max_steps"),
        ({"lr": 0}, "lr"),
        ({"schedule": "step"}, "schedule"),
        ({"precision": "fp8"}, "precision"),
        ({"beta2": 1.5}, "beta2"),
        ({"grad_accum": 1.5}, "grad_accum"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_train_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_fp16_needs_a_gpu():
    with pytest.raises(ValueError, match="bf16"):
        training.autocast("fp16", torch.device("cpu"))


# --------------------------------------------------------------------------- one step, one evaluation


def _batch(tokenizer, blocks, rows, seed):
    return masking.MLMCollator(tokenizer, seed=seed)(blocks[rows])


def _step(model, micro, lr=1e-2, max_grad_norm=0.0):
    config = TrainConfig(lr=lr, warmup_steps=0, schedule="constant", max_grad_norm=max_grad_norm, weight_decay=0.0)
    optimizer = training.make_optimizer(model, config)
    return training.train_step(
        model, micro, optimizer, training.make_scheduler(optimizer, config), max_grad_norm=max_grad_norm
    )


def test_accumulation_equals_one_big_batch(tokenizer, blocks):
    """Two micro-batches of 4 with token-weighted losses = one batch of 8: same loss, same update."""
    big = _batch(tokenizer, blocks, slice(0, 8), seed=1)
    halves = [{k: v[:4] for k, v in big.items()}, {k: v[4:] for k, v in big.items()}]
    counts = [int((h["labels"] != -100).sum()) for h in halves]
    assert counts[0] != counts[1]  # a plain mean of the two means would differ
    one, two = small_model(dropout=0.0, attention_dropout=0.0), small_model(dropout=0.0, attention_dropout=0.0)
    r1, r2 = _step(one, [big]), _step(two, halves)
    assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    assert r2["tokens"] == r1["tokens"] == sum(counts)
    for (name, a), b in zip(one.named_parameters(), two.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_train_step_loss_clipping_and_lr(tokenizer, blocks):
    model = small_model()
    batch = _batch(tokenizer, blocks, slice(0, 8), seed=2)
    model.train()
    torch.manual_seed(5)
    expected = model(**batch).loss.item()
    model = small_model()
    torch.manual_seed(5)
    config = TrainConfig(lr=1e-3, warmup_steps=4, max_steps=10, max_grad_norm=1e-3)
    optimizer = training.make_optimizer(model, config)
    scheduler = training.make_scheduler(optimizer, config)
    first = training.train_step(model, [batch], optimizer, scheduler, max_grad_norm=1e-3)
    assert first["loss"] == pytest.approx(expected, rel=1e-6)  # the loss before the update, same dropout draw
    assert first["lr"] == 0.0  # warmup starts at 0 (as transformers)
    second = training.train_step(model, [batch], optimizer, scheduler, max_grad_norm=1e-3)
    assert second["lr"] == pytest.approx(0.25e-3)
    assert first["grad_norm"] > 1e-3  # reported before clipping
    grads_after = [p.grad for p in model.parameters()]
    assert all(g is None for g in grads_after)  # zeroed for the next step


def test_train_step_rejects_a_batch_without_masks(tokenizer, blocks):
    model = small_model()
    batch = _batch(tokenizer, blocks, slice(0, 2), seed=0)
    batch["labels"][:] = -100
    with pytest.raises(ValueError, match="no masked token"):
        _step(model, [batch])


def test_evaluate_against_a_direct_computation(eval_data):
    model = small_model(seed=3)
    model.train()
    got = training.evaluate(model, eval_data)
    assert model.training  # mode restored
    hf = M.to_roberta(model).eval()
    losses, correct, count = [], 0, 0
    with torch.no_grad():
        for batch in eval_data:
            logits = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            where = batch["labels"] != -100
            losses.append(F.cross_entropy(logits[where], batch["labels"][where], reduction="sum"))
            correct += int((logits[where].argmax(-1) == batch["labels"][where]).sum())
            count += int(where.sum())
    loss = float(sum(losses)) / count
    assert got["tokens"] == count
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert got["acc"] == correct / count
    masked_only = small_model(seed=3, masked_only=True)
    assert training.evaluate(masked_only, eval_data)["loss"] == pytest.approx(got["loss"], rel=1e-5)
    assert abs(got["loss"] - math.log(500)) < 0.1  # an untrained model is close to uniform: ln V


# --------------------------------------------------------------------------- data position, checkpoints


def test_batch_stream_epochs_and_position():
    stream = training.BatchStream(10, 3, seed=4)
    first_epoch = [next(stream) for _ in range(3)]
    assert sorted(torch.cat(first_epoch).tolist()) != list(range(10))  # 9 of 10: last partial batch dropped
    assert len(set(torch.cat(first_epoch).tolist())) == 9
    state = stream.state_dict()
    ahead = [next(stream).tolist() for _ in range(5)]
    assert stream.epoch == 2
    again = training.BatchStream(10, 3, seed=4)
    again.load_state_dict(state)
    assert [next(again).tolist() for _ in range(5)] == ahead
    with pytest.raises(ValueError, match="batch size"):
        training.BatchStream(10, 2, seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="fewer than one batch"):
        training.BatchStream(2, 3)


def test_checkpoint_round_trip_restores_everything(tmp_path, tokenizer, blocks):
    model, config = small_model(), TrainConfig(lr=1e-3, warmup_steps=2, max_steps=10)
    optimizer = training.make_optimizer(model, config)
    scheduler = training.make_scheduler(optimizer, config)
    for seed in range(3):
        training.train_step(model, [_batch(tokenizer, blocks, slice(seed, seed + 4), seed)], optimizer, scheduler)
    torch.manual_seed(11)
    path = training.save_checkpoint(
        tmp_path / "c" / training.checkpoint_name(3),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        step=3,
        data_state={"stream": {"epoch": 1}},
    )
    assert path.name == "step-0000003.pt" and not list(path.parent.glob("*.tmp"))
    expected_draw = torch.rand(3)
    twin, twin_config = small_model(seed=9), config
    twin_optimizer = training.make_optimizer(twin, twin_config)
    twin_scheduler = training.make_scheduler(twin_optimizer, twin_config)
    state = training.load_checkpoint(path, model=twin, optimizer=twin_optimizer, scheduler=twin_scheduler)
    assert state["step"] == 3 and state["data"] == {"stream": {"epoch": 1}}
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored
    assert twin_scheduler.last_epoch == 3 and twin_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)
    batch = _batch(tokenizer, blocks, slice(10, 14), 7)
    torch.manual_seed(0)
    r1 = training.train_step(model, [batch], optimizer, scheduler)
    torch.manual_seed(0)
    r2 = training.train_step(twin, [batch], twin_optimizer, twin_scheduler)
    assert r1 == r2


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.load_checkpoint(tmp_path / "missing.pt", model=small_model())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        training.load_checkpoint(tmp_path / "junk.pt", model=small_model())
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a course checkpoint"):
        training.load_checkpoint(tmp_path / "other.pt", model=small_model())


def _saved(folder, *steps):
    model, config = small_model(), TrainConfig(lr=1e-3, warmup_steps=0, max_steps=10)
    optimizer = training.make_optimizer(model, config)
    scheduler = training.make_scheduler(optimizer, config)
    return [
        training.save_checkpoint(
            folder / training.checkpoint_name(step), model=model, optimizer=optimizer, scheduler=scheduler, step=step
        )
        for step in steps
    ]


def test_an_unreadable_newest_checkpoint_is_skipped_with_one_line(tmp_path, capsys):
    one, two = _saved(tmp_path, 1, 2)

    def load(path):
        return training.load_checkpoint(path, model=small_model(), restore_rng=False)

    assert training.load_latest(tmp_path, load)[0] == two
    two.write_bytes(two.read_bytes()[:-100])  # torn
    path, state = training.load_latest(tmp_path, load)
    assert path == one and state["step"] == 1
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {two} is not a readable checkpoint (not a complete torch.save archive: "
        f"{two.stat().st_size:,} bytes, truncated or overwritten?); trying the checkpoint before it"
    ]
    one.write_bytes(b"")
    with pytest.raises(
        training.CheckpointError,
        match=r"no readable checkpoint in .* \(step-0000002.pt, "
        r"step-0000001.pt cannot be read\)",
    ):
        training.load_latest(tmp_path, load)
    assert training.load_latest(tmp_path / "empty", load) == (None, None)
    assert issubclass(training.CheckpointError, ValueError)  # what load_checkpoint raised before


def test_a_failed_save_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    import errno

    (one,) = _saved(tmp_path, 1)
    before = one.read_bytes()
    real_save = torch.save

    def failing(error):
        def save(obj, f, *args, **kwargs):
            f.write(b"the start of a checkpoint")
            raise error

        return save

    monkeypatch.setattr(torch, "save", failing(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(
        training.CheckpointSaveError,
        match=r"could not save checkpoint .*step-0000002.pt \(no space "
        r"left on device\); the earlier checkpoints are intact "
        r"\(newest: step-0000001.pt\)",
    ):
        _saved(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000001.pt"] and one.read_bytes() == before
    monkeypatch.setattr(
        torch,
        "save",
        failing(
            RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0")
        ),
    )
    with pytest.raises(training.CheckpointSaveError, match=r"\(torch could not write it: \[enforce fail"):
        _saved(tmp_path, 2)
    monkeypatch.setattr(torch, "save", failing(RuntimeError("a bug, not the disk")))
    with pytest.raises(RuntimeError, match="^a bug, not the disk$"):  # not disguised as a save error
        _saved(tmp_path, 2)
    assert training.list_checkpoints(tmp_path) == [one] and one.read_bytes() == before
    monkeypatch.setattr(torch, "save", real_save)


def test_listing_and_pruning_checkpoints(tmp_path):
    for step in (5, 10, 100, 20):
        (tmp_path / training.checkpoint_name(step)).write_bytes(b"x")
    (tmp_path / (training.checkpoint_name(200) + ".tmp")).write_bytes(b"half")
    (tmp_path / "step-notanumber.pt").write_bytes(b"x")
    assert [p.name for p in training.list_checkpoints(tmp_path)] == [
        "step-0000005.pt",
        "step-0000010.pt",
        "step-0000020.pt",
        "step-0000100.pt",
    ]
    assert training.latest_checkpoint(tmp_path).name == "step-0000100.pt"
    training.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in training.list_checkpoints(tmp_path)] == ["step-0000020.pt", "step-0000100.pt"]
    assert not list(tmp_path.glob("*.tmp"))
    assert training.latest_checkpoint(tmp_path / "nothing") is None


def test_experiment_folder(tmp_path):
    folder = training.new_experiment(tmp_path, "mlm", {"lr": 1e-3})
    assert re.fullmatch(r"mlm\.\d{4}\.\d\d\.\d\d\.\d\d\.\d\d\.\d\d\.[0-9a-f]{8}", folder.name)
    assert json.loads((folder / "hparams.json").read_text()) == {"lr": 1e-3}
    assert (folder / "tb").is_dir() and (folder / "checkpoints").is_dir()
    githash = (folder / "githash.log").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}\n", githash) or githash.startswith("not a git checkout")
    elsewhere = training.new_experiment(tmp_path, "mlm", {}, code_dir=tmp_path)
    assert (elsewhere / "githash.log").read_text().startswith("not a git checkout")
    assert (elsewhere / "gitdiff.log").read_text().startswith("not a git checkout")
    assert elsewhere != folder
    with pytest.raises(ValueError, match="folder name"):
        training.new_experiment(tmp_path, "a/b", {})


def test_metrics_log_drops_rows_after_the_resumed_checkpoint(tmp_path):
    log = training.MetricsLog(tmp_path)
    for step in range(1, 6):
        log.log(step, loss=float(step), lr=0.1)
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn by a kill
    log = training.MetricsLog(tmp_path, resume_step=3)
    log.log(4, loss=40.0, lr=0.1)
    log.close()
    rows = training.read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


# --------------------------------------------------------------------------- the loop


def _run(folder, tokenizer, blocks, eval_data, max_steps, **overrides):
    config = TrainConfig(
        **{
            "max_steps": max_steps,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup_steps": 0,
            "schedule": "constant",
            "save_every": 1,
            "keep_last": 10,
            "eval_every": 2,
            **overrides,
        }
    )
    model = small_model(seed=1)
    collator = masking.MLMCollator(tokenizer, seed=0)
    training.train(model, blocks, eval_data, config, collator=collator, folder=folder, progress=False)
    return model


def test_step_numbering(tmp_path, tokenizer, blocks, eval_data):
    """The checkpoint called step s holds the state after s optimizer updates; row s is update s."""
    _run(tmp_path / "a", tokenizer, blocks, eval_data, 3)
    two = _run(tmp_path / "b", tokenizer, blocks, eval_data, 2)
    names = [p.name for p in training.list_checkpoints(tmp_path / "a" / "checkpoints")]
    assert names == ["step-0000001.pt", "step-0000002.pt", "step-0000003.pt"]
    state = torch.load(tmp_path / "a" / "checkpoints" / "step-0000002.pt", weights_only=False)
    assert state["step"] == 2
    assert state["scheduler"]["last_epoch"] == 2
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {2}  # Adam's own update count
    for name, value in two.state_dict().items():
        assert torch.equal(state["model"][name], value), name
    assert state["data"]["stream"]["index"] == 2 * 4  # two batches of 4 consumed
    rows = training.read_metrics(tmp_path / "a")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 2, 3]


def test_training_text_is_evaluated_beside_the_held_out_text(tmp_path, tokenizer, blocks, eval_data):
    """train_eval_data: the same fixed masks on training blocks, logged as train_eval_loss at every evaluation,
    equal to evaluate() on them; the run itself (losses, held-out losses) does not change."""
    seen = training.eval_batches(
        masking.fixed_eval_masks(list(blocks[:8]), tokenizer, seed=0), 8, tokenizer.pad_token_id
    )
    config = TrainConfig(max_steps=3, batch_size=4, lr=1e-3, warmup_steps=0, eval_every=2, save_every=3)

    def go(folder, **extra):
        model = small_model(seed=1, dropout=0.0, attention_dropout=0.0)
        training.train(
            model,
            blocks,
            eval_data,
            config,
            collator=masking.MLMCollator(tokenizer, seed=0),
            folder=folder,
            progress=False,
            **extra,
        )
        return model, training.read_metrics(folder)

    model, rows = go(tmp_path / "with", train_eval_data=seen)
    _, plain = go(tmp_path / "without")
    logged = [(r["step"], r["train_eval_loss"]) for r in rows if "train_eval_loss" in r]
    assert [step for step, _ in logged] == [0, 2, 3]
    assert logged[-1][1] == pytest.approx(training.evaluate(model, seen)["loss"], abs=1e-6)
    assert logged[-1][1] != pytest.approx([r for r in rows if "eval_loss" in r][-1]["eval_loss"], abs=1e-3)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "train_eval_loss")} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in plain]


def test_in_process_resume_gives_the_same_losses(tmp_path, tokenizer, blocks, eval_data):
    straight = _run(tmp_path / "straight", tokenizer, blocks, eval_data, 6, grad_accum=2)
    _run(tmp_path / "stopped", tokenizer, blocks, eval_data, 3, grad_accum=2)
    resumed = _run(tmp_path / "stopped", tokenizer, blocks, eval_data, 6, grad_accum=2)  # resume="auto"
    rows = [training.read_metrics(tmp_path / d) for d in ("straight", "stopped")]
    train_rows = [[(r["step"], r["loss"], r["lr"]) for r in rs if "loss" in r] for rs in rows]
    assert train_rows[0] == train_rows[1] and len(train_rows[0]) == 6
    evals = [{r["step"]: r["eval_loss"] for r in rs if "eval_loss" in r} for rs in rows]
    assert sorted(evals[1]) == [0, 2, 3, 4, 6]  # the stopped run also evaluated at its last step, 3
    assert all(evals[0][s] == evals[1][s] for s in evals[0])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        config = TrainConfig(max_steps=2, batch_size=4)
        training.train(
            small_model(),
            blocks,
            None,
            config,
            collator=masking.MLMCollator(tokenizer),
            folder=tmp_path / "straight",
            resume=None,
            progress=False,
        )


def test_extending_a_finished_run_follows_the_new_schedule(tmp_path, tokenizer, blocks, eval_data):
    """A 3-step run (linear decay: its last lr is 0) resumed with max_steps=6 continues exactly like a
    6-step run: the first update after resuming uses the new schedule's lr, not the saved 0."""
    kwargs = dict(schedule="linear", warmup_steps=2)
    _run(tmp_path / "straight", tokenizer, blocks, eval_data, 6, **kwargs)
    _run(tmp_path / "extended", tokenizer, blocks, eval_data, 3, **kwargs)
    _run(tmp_path / "extended", tokenizer, blocks, eval_data, 6, **kwargs)
    rows = [
        [(r["step"], r["loss"], r["lr"]) for r in training.read_metrics(tmp_path / d) if "loss" in r]
        for d in ("straight", "extended")
    ]
    assert rows[0] == rows[1] and rows[0][3][2] > 0


# --------------------------------------------------------------------------- killed processes (the CLI pipeline)

DRIVER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from course_lib import training
    from course_lib.cli import pretrain as train
    mode, arg, output_dir, tokenizer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    config = train.load_config("configs/tiny.yaml", [
        "--output_dir", output_dir, "--tokenizer", tokenizer, "--max_train_texts", "3000", "--max_eval_texts", "60",
        "--max_length", "32", "--batch_size", "8", "--grad_accum", "2", "--max_steps", "12", "--warmup_steps", "3",
        "--save_every", "4", "--keep_last", "5", "--eval_every", "5", "--log_every", "1", "--fill_mask", "2",
        "--dropout", "0.1", "--attention_dropout", "0.1"])

    def kill_at(step, row):
        if mode == "kill" and step == arg:
            os.kill(os.getpid(), signal.SIGKILL)

    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        if mode == "kill-in-save" and isinstance(obj, dict) and obj.get("step") == arg:
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save_then_die
    result = train.run(config, progress=False, on_step=kill_at)
    print("FINISHED", result["folder"])
""")


def _drive(tmp_path, mode, arg, output_dir, tokenizer):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.run(
        [sys.executable, str(script), mode, str(arg), str(output_dir), str(tokenizer.folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _losses(output_dir):
    (folder,) = [p for p in Path(output_dir).iterdir() if p.name.startswith("tiny.")]
    return folder, [(r["step"], r.get("loss"), r.get("eval_loss")) for r in training.read_metrics(folder)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("straight")
    done = _drive(tmp, "straight", 0, tmp / "runs", tokenizer)
    assert done.returncode == 0, done.stderr
    folder, losses = _losses(tmp / "runs")
    assert [s for s, loss, _ in losses if loss is not None] == list(range(1, 13))
    return folder, losses


@pytest.mark.slow  # SIGKILLs a run in a separate process
def test_sigkill_then_resume_gives_identical_losses(tmp_path, tokenizer, straight_run):
    killed = _drive(tmp_path, "kill", 7, tmp_path / "runs", tokenizer)
    assert killed.returncode == -signal.SIGKILL
    folder, before = _losses(tmp_path / "runs")
    assert max(s for s, *_ in before) == 7  # it had logged step 7 (checkpoint at 4) when it died
    resumed = _drive(tmp_path, "resume", 0, tmp_path / "runs", tokenizer)
    assert resumed.returncode == 0, resumed.stderr
    assert "(resuming)" in resumed.stdout
    same_folder, after = _losses(tmp_path / "runs")
    assert same_folder == folder
    assert after == straight_run[1]  # exact equality, step by step, train and eval
    assert (folder / "hf" / "config.json").is_file()
    assert "held-out sentences: top-1" in resumed.stdout and "no-context baseline" in resumed.stdout
    last_eval = [row[2] for row in after if row[2] is not None][-1]
    assert json.loads((folder / "eval.json").read_text())["eval_loss"] == pytest.approx(last_eval)


@pytest.mark.slow  # SIGKILLs a run in a separate process
def test_killed_while_saving_leaves_the_previous_checkpoint(tmp_path, tokenizer, straight_run):
    killed = _drive(tmp_path, "kill-in-save", 8, tmp_path / "runs", tokenizer)
    assert killed.returncode == -signal.SIGKILL
    folder, _ = _losses(tmp_path / "runs")
    ckpts = folder / "checkpoints"
    assert (ckpts / "step-0000008.pt.tmp").read_bytes() == b"half a checkpoint"
    assert training.latest_checkpoint(ckpts).name == "step-0000004.pt"
    state = training.load_checkpoint(
        training.latest_checkpoint(ckpts),
        model=M.EncoderForMaskedLM(M.EncoderConfig.from_dict(json.loads((folder / "encoder_config.json").read_text()))),
    )
    assert state["step"] == 4
    resumed = _drive(tmp_path, "resume", 0, tmp_path / "runs", tokenizer)
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(tmp_path / "runs")[1] == straight_run[1]
    assert not list(ckpts.glob("*.tmp"))


@pytest.mark.slow  # a run in a separate process
def test_resume_from_a_named_checkpoint(tmp_path, tokenizer, straight_run):
    """--resume path/to/step-0000004.pt continues from that checkpoint, not from the newest one."""
    folder, losses = straight_run
    copy = tmp_path / "runs" / folder.name
    shutil.copytree(folder, copy)
    names = [p.name for p in training.list_checkpoints(copy / "checkpoints")]
    assert names[0] == "step-0000004.pt" and names[-1] == "step-0000012.pt"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.replace('"--fill_mask", "2",', '"--fill_mask", "0", "--resume", sys.argv[5],'))
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "resume",
            "0",
            str(tmp_path / "runs"),
            str(tokenizer.folder),
            str(copy / "checkpoints" / "step-0000004.pt"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "step-0000004.pt at step 4" in done.stdout
    assert _losses(tmp_path / "runs")[1] == losses  # steps 5-12 trained again, the same
