"""Notebook 04: checkpoints and experiment folders, what `training.train` writes and resumes from.

    save_checkpoint(path, model=..., optimizer=..., scheduler=..., step=..., data_state=...)   # atomic
    load_checkpoint(path, model=..., optimizer=..., scheduler=...)       # and every random number generator
    latest_checkpoint(folder), load_latest(folder, load), prune_checkpoints(folder, keep_last)
    new_experiment(root, name, hparams)   # root/{name}.{time}.{uuid}/: hparams.json, git logs, tb/, checkpoints/
    MetricsLog(folder), read_metrics(folder)                            # metrics.jsonl and TensorBoard

A checkpoint holds everything needed to continue a run exactly: the model, optimizer, scheduler (and fp16
loss scaler) states, every random number generator (`rng_state`), where the data is (`data_state`) and the
step; `step-000000s.pt` holds the state after s updates. It is written to a `.tmp` file, flushed to disk and
renamed, so a run killed at any moment leaves only complete checkpoints. One that cannot be read raises
`CheckpointError` (`load_latest` then tries the one before it), one that cannot be written
`CheckpointSaveError`, with the earlier ones intact.

`course_lib.training` imports the public names of this module, so `training.save_checkpoint`,
`training.new_experiment`, `training.read_metrics` ... are these.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import torch

# --------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    """Every random number generator a training step draws from: python, numpy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (torn, overwritten, not a course checkpoint), or a folder none
    of whose checkpoints can be read; the message names the file."""


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (a full disk, a read-only folder); the earlier ones are intact."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}.pt"


def _write_failed(error: BaseException) -> bool:
    """Whether `error`, raised while writing a checkpoint, is the file system saying no (not a bug): an
    OSError, or the RuntimeError torch's zip writer raises when a write of its own fails."""
    if isinstance(error, OSError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text)


def _save_error(path: Path, error: BaseException) -> CheckpointSaveError:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on device"
    elif isinstance(error, OSError) and error.strerror:
        why = error.strerror.lower()
    else:
        why = f"torch could not write it: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    before = latest_checkpoint(path.parent)
    kept = (
        f"the earlier checkpoints are intact (newest: {before.name}); run the same command again to resume from it"
        if before is not None
        else "no earlier checkpoint was lost"
    )
    saved = CheckpointSaveError(f"could not save checkpoint {path} ({why}); {kept}")
    saved.errno = getattr(error, "errno", None)
    return saved


def save_checkpoint(
    path,
    *,
    model,
    optimizer,
    scheduler,
    step: int,
    scaler=None,
    data_state: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write everything needed to continue the run exactly, atomically: to `path.tmp`, flushed to
    disk, then renamed to `path`. A rename within a folder is atomic, so `path` is either the old
    file or the complete new one, never half a file, whenever the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "data": data_state or {},
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk, a read-only folder: say so, keep the older checkpoints
        if not _write_failed(e):
            raise
        with contextlib.suppress(OSError):
            tmp.unlink()  # half a file is of no use, and frees the space it took
        raise _save_error(path, e) from e
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every OS)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def load_checkpoint(path, *, model, optimizer=None, scheduler=None, scaler=None, restore_rng: bool = True) -> dict:
    """Load a checkpoint into the given objects (and the RNGs); returns it (step, data, extra ...).

    The file holds python objects besides tensors (RNG states), so it is loaded with
    weights_only=False: load only checkpoints you (or this course) wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a torn or overwritten file is not one
        raise CheckpointError(
            f"{path} is not a readable checkpoint (not a complete torch.save archive: "
            f"{path.stat().st_size:,} bytes, truncated or overwritten?)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        AttributeError,
        ImportError,
        MemoryError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as e:  # what a damaged archive makes torch.load raise
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a course checkpoint (no 'model' and 'step' in it)")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint is named after (step-0000400.pt or a DeepSpeed folder step-0000400/), or None."""
    with contextlib.suppress(ValueError):
        return int(path.name.split("-", 1)[1].removesuffix(".pt"))
    return None


def list_checkpoints(folder) -> list[Path]:
    """Complete checkpoints in `folder`, oldest step first: files `step-N.pt` (`.tmp` leftovers of a killed
    save are not), and DeepSpeed checkpoint folders `step-N/` up to the one DeepSpeed's `latest` file names
    (it writes that file last, so a folder of a killed save is not listed)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    latest = folder / "latest"
    newest_dir = checkpoint_step(Path(latest.read_text().strip())) if latest.is_file() else None
    found = []
    for path in folder.glob("step-*"):
        step = checkpoint_step(path)
        if step is None:
            continue
        if (path.is_file() and path.suffix == ".pt") or (
            path.is_dir() and newest_dir is not None and step <= newest_dir
        ):
            found.append((step, path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(folder) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_latest(folder, load, warn: bool = True) -> tuple[Path | None, dict | None]:
    """Load the newest readable checkpoint of `folder` with `load(path)`: (its path, what load returned), or
    (None, None) when there is none. A checkpoint that cannot be read (CheckpointError: a file torn by a
    crash, overwritten, copied in half) is skipped with one warning line, and the one before it is tried;
    CheckpointError when none can be read."""
    skipped = []
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load(path)
        except CheckpointError as e:
            skipped.append(path.name)
            if warn:
                print(f"warning: {e}; trying the checkpoint before it", file=sys.stderr)
    if skipped:
        raise CheckpointError(
            f"no readable checkpoint in {folder} ({', '.join(skipped)} cannot be read); "
            f"delete them or start afresh with --resume none"
        )
    return None, None


def prune_checkpoints(folder, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, and leftovers of killed saves."""
    complete = list_checkpoints(folder)
    for path in complete[:-keep_last]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in Path(folder).glob("*.tmp"):
        path.unlink()
    for path in Path(folder).glob("step-*"):  # a DeepSpeed folder of a killed save
        if path.is_dir() and path not in complete:
            shutil.rmtree(path)


# --------------------------------------------------------------------------- experiment folder and metrics


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def new_experiment(root, name: str, hparams: dict, code_dir=None) -> Path:
    """A fresh folder `root/{name}.{YYYY.MM.DD.HH.MM.SS}.{short uuid}/` holding hparams.json, githash.log,
    gitdiff.log (the code's commit and uncommitted changes, or a line saying it is not in a git
    checkout), and empty tb/ and checkpoints/. `code_dir`: where the code is (default: the course's)."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"experiment name {name!r} must be a plain, non-empty folder name")
    stamp = time.strftime("%Y.%m.%d.%H.%M.%S")
    folder = Path(root) / f"{name}.{stamp}.{uuid.uuid4().hex[:8]}"
    (folder / "tb").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "hparams.json").write_text(json.dumps(hparams, indent=2, sort_keys=True, default=str) + "\n")
    code_dir = Path(code_dir) if code_dir else Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], code_dir)
    if commit is None:
        note = f"not a git checkout: {code_dir}\n"
        (folder / "githash.log").write_text(note)
        (folder / "gitdiff.log").write_text(note)
    else:
        (folder / "githash.log").write_text(commit)
        (folder / "gitdiff.log").write_text(_git(["diff", "HEAD"], code_dir) or "")
    return folder


def find_experiment(root, name: str) -> Path | None:
    """The newest experiment folder `root/{name}.*` that holds a checkpoint, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    folders = sorted(p for p in root.glob(f"{name}.*") if p.is_dir() and latest_checkpoint(p / "checkpoints"))
    return folders[-1] if folders else None


class MetricsLog:
    """Rows to `metrics.jsonl` (one JSON object per line) and the same scalars to TensorBoard (`tb/`).

    `resume_step`: the run continues from that checkpoint, so rows logged after it by the killed run
    are dropped (they will be logged again) and TensorBoard purges them too.
    `write=False`: log nothing (the other processes of a multi-process run; rank 0 writes)."""

    def __init__(self, folder, resume_step: int | None = None, tensorboard: bool = True, write: bool = True):
        self.file = self.writer = None
        if not write:
            return
        self.path = Path(folder) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if line.strip() and _row_step(line) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None
            self.writer = SummaryWriter(str(Path(folder) / "tb"), purge_step=purge)

    def log(self, step: int, **values) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(
                        key.replace("eval_", "eval/") if key.startswith("eval_") else f"train/{key}", value, step
                    )

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line: drop it


def read_metrics(folder) -> list[dict]:
    """The rows of `folder/metrics.jsonl` (a torn last line, from a killed run, is skipped)."""
    rows = []
    for line in (Path(folder) / "metrics.jsonl").read_text().splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows
