"""What both command lines share: the experiment folder a run goes to (a new one, or the newest one of
the same name to continue), and one way to end:

    0    the run finished
    2    the user asked for something that cannot work: one `error: ...` line on stderr naming the file,
         key or value (a bad config, a missing or unreadable file, a device this machine lacks, a folder
         that cannot be written, a full disk); nothing already saved is lost
    130  Ctrl-C: one line saying where the run stopped and that the same command continues it

Only the errors listed in USER_ERRORS (and file-system refusals, by errno) are turned into that line: a
programming error still shows its traceback."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .. import device as device_lib
from .. import training
from ..config import ConfigError, flat
from ..data import DataError
from ..distributed import DSConfigError

# keys that may change when a run is resumed; any other difference means it would not be the same run
RESUMABLE_CHANGES = {
    "run.resume",
    "run.output_dir",
    "run.fill_mask",
    "run.device",
    "run.mode",
    "run.log_level",
    "train.max_steps",
    "train.log_every",
    "train.eval_every",
    "train.save_every",
    "train.keep_last",
    # "auto" now and bf16 before are the same run if both train in fp16 (a T4): train.precision is what counts
    "train.requested_precision",
}
USER_ERRORS = (
    ConfigError,
    DSConfigError,
    DataError,
    device_lib.DeviceError,
    training.CheckpointError,
    training.CheckpointSaveError,
    FileNotFoundError,
)
# the file system saying no: a full disk, a read-only or forbidden folder (reported, not a traceback)
REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
STOPPED = 130  # the exit status of a program stopped by Ctrl-C (128 + SIGINT)


class Stopped(Exception):
    """Ctrl-C during a run; the message says where it stopped and how to go on."""


# --------------------------------------------------------------------------- the experiment folder


def _why_not_a_folder(path: Path, error: OSError) -> str:
    """Why `path` cannot be made: a regular file on the way, or the file system's own reason."""
    for above in [path, *path.parents]:
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                return f"{above} is a file, not a folder"
            break
    reason = (error.strerror or type(error).__name__).lower()
    return f"{reason}: {error.filename}" if error.filename else reason


def experiment_folder(run, hparams: dict) -> tuple[Path, str | Path | None]:
    """The folder to run in, and where to resume from: None (a new run), "auto" (the folder's newest
    checkpoint) or a checkpoint file. `run` is a config's run section (resume, output_dir, name);
    `hparams` the whole config as a dict, written to a new folder and compared with a resumed one's."""
    resume = run.resume
    if resume == "none":
        return _new_experiment(run, hparams), None
    if resume == "auto":
        folder = training.find_experiment(run.output_dir, run.name)
        if folder is None:
            return _new_experiment(run, hparams), None
        start = "auto"
    else:
        folder = start = Path(resume)
        if folder.is_file() or folder.parent.name == "checkpoints":  # a checkpoint: its experiment is two levels up
            folder = folder.parent.parent
        else:
            start = "auto"
        if not (folder / "hparams.json").is_file():
            raise ConfigError(
                f"run.resume={resume!r}: not an experiment folder or a checkpoint in one (no hparams.json)"
            )
    changed = changed_settings(folder, hparams)
    if changed:
        raise ConfigError(
            f"cannot resume {folder}: it was trained with different settings ({changed}); "
            f"use --resume none to start a new run"
        )
    if not os.access(folder / "checkpoints", os.W_OK):  # a read-only copy: refuse before anything is rewritten
        raise ConfigError(
            f"cannot resume {folder}: its checkpoints folder is not writable (read-only file system "
            f"or permissions); copy the run somewhere writable and give that as --resume"
        )
    return folder, start


def changed_settings(folder: Path, hparams: dict, keys=None) -> str:
    """The settings (all but RESUMABLE_CHANGES, or only `keys`: prefixes such as "model.") in which `hparams`
    differs from the run in `folder`, as "key: old -> new; ...", or "" when none does."""
    before = flat(json.loads((folder / "hparams.json").read_text()))
    now = flat(hparams)
    changed = sorted(
        k
        for k in set(before) | set(now)
        if before.get(k) != now.get(k) and (k.startswith(tuple(keys)) if keys else k not in RESUMABLE_CHANGES)
    )
    return "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)


def _new_experiment(run, hparams: dict) -> Path:
    try:
        return training.new_experiment(run.output_dir, run.name, hparams)
    except OSError as e:  # a regular file on the way, a read-only file system, no permission
        raise ConfigError(
            f"run.output_dir={run.output_dir!r}: cannot make the experiment folder there "
            f"({_why_not_a_folder(Path(run.output_dir), e)})"
        ) from None


# --------------------------------------------------------------------------- what a run checks first


def device_for(run, train):
    """The device of `run.device`, checked against `train.precision` (`precision_for` resolves it) before
    anything is made."""
    try:
        device = device_lib.get_device(run.device)
    except device_lib.DeviceError as e:
        raise ConfigError(f"run.device={run.device!r}: {e}") from None
    if train.precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA GPU (its loss scaler is CUDA-only), and this run is on "
            f"{device.type} (run.device={run.device!r}); use --precision bf16 or fp32"
        )
    return device


def precision_for(config, device) -> tuple:
    """(config, hparams, notice): `config` with train.precision resolved for `device`, the precision the run
    trains in (`device.resolve_precision`: "auto" becomes 16 bits on a GPU, fp32 on a CPU unless it has AMX and
    the model is large enough (config.model.hidden_size); bf16 on a GPU
    without bf16 units, such as a T4, becomes fp16 with loss scaling); the settings to record in hparams.json,
    which add train.requested_precision when the request was another; and the line saying so ("" if none)."""
    requested = config.train.precision
    hidden = config.model.hidden_size
    train = dataclasses.replace(config.train, precision=device_lib.resolve_precision(requested, device, hidden))
    config = dataclasses.replace(config, train=train)
    hparams = config.to_dict()
    if train.precision != requested:
        hparams["train"]["requested_precision"] = requested
    return config, hparams, device_lib.precision_notice(requested, train.precision, device, hidden)


@contextlib.contextmanager
def stop_message(folder: Path, reached: dict):
    """Turn Ctrl-C inside the block into `Stopped`, saying at which step (`reached["step"]`, updated by the
    run's on_step) and from which checkpoint the same command will continue."""
    try:
        yield
    except KeyboardInterrupt:
        last = training.latest_checkpoint(folder / "checkpoints")
        saved = training.checkpoint_step(last) if last is not None else None
        step = reached.get("step")
        step = saved if step is None else step
        if saved is None:
            where = f"at step {step or 0}" if step else "before the first update"
            raise Stopped(
                f"stopped {where}, before the first checkpoint of {folder}; run the same command again to start afresh"
            ) from None
        later = f" (it continues from its checkpoint at step {saved})" if step != saved else ""
        raise Stopped(f"stopped at step {step}; run the same command again to resume{later}") from None


# --------------------------------------------------------------------------- the one way to end


def _one_line(error: BaseException) -> str:
    """The error's message on one line (YAML and torch messages span several)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


def _close_bars() -> None:
    """End any progress bar a stopped run left open, so that the last line starts a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # `--config` without a file ...: the one error line, not argparse's usage + error
        raise ConfigError(f"{message} (see {self.prog} --help)")


def command_main(prog: str, doc: str, load, run, argv: list[str] | None = None, example: str = "") -> int:
    """Parse `--config FILE [--no-progress] [--key value ...]`, load the config with `load(path, overrides)`
    and `run(config, progress=...)` it. A user error ends with `error: ...` on stderr and status 2; Ctrl-C
    with one line saying where the run stopped, status 130."""
    parser = _Parser(
        prog=prog, description=doc.split("\n")[0], epilog=f"Any config key can follow as --key value (e.g. {example})."
    )
    parser.add_argument("--config", help="a YAML config (see configs/); default: the built-in defaults")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # the deepspeed launcher adds --local_rank; LOCAL_RANK is read instead
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    try:
        args, overrides = parser.parse_known_args(argv)
        config = load(args.config, overrides)
        run(config, progress=not args.no_progress)
    except USER_ERRORS as e:
        _close_bars()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in REFUSALS:
            raise
        _close_bars()
        reason = (e.strerror or str(e)).lower()
        print(f"error: {f'{e.filename}: ' if e.filename else ''}{reason}", file=sys.stderr)
        return 2
    except Stopped as e:
        _close_bars()
        print(e, file=sys.stderr)
        return STOPPED
    except KeyboardInterrupt:  # before a run had its folder: nothing was made
        _close_bars()
        print("stopped before training started; nothing was saved", file=sys.stderr)
        return STOPPED
    return 0
