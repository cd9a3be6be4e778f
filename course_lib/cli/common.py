"""What both command lines share: the experiment folder a run goes to (a new one, or the newest one of
the same name to continue), and one way to end: 0 when the run finished, 2 with one `error:` line
naming the file, key or value when the user asked for something that cannot work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import training
from ..config import ConfigError, flat
from ..data import DataError
from ..distributed import DSConfigError

# keys that may change when a run is resumed; any other difference means it would not be the same run
RESUMABLE_CHANGES = {"run.resume", "run.output_dir", "run.fill_mask", "run.device", "run.mode", "run.log_level",
                     "train.max_steps", "train.log_every", "train.eval_every", "train.save_every", "train.keep_last"}
USER_ERRORS = (ConfigError, DSConfigError, DataError, FileNotFoundError)


def experiment_folder(run, hparams: dict) -> tuple[Path, str | Path | None]:
    """The folder to run in, and where to resume from: None (a new run), "auto" (the folder's newest
    checkpoint) or a checkpoint file. `run` is a config's run section (resume, output_dir, name);
    `hparams` the whole config as a dict, written to a new folder and compared with a resumed one's."""
    resume = run.resume
    if resume == "none":
        return training.new_experiment(run.output_dir, run.name, hparams), None
    if resume == "auto":
        folder = training.find_experiment(run.output_dir, run.name)
        if folder is None:
            return training.new_experiment(run.output_dir, run.name, hparams), None
        start = "auto"
    else:
        folder = start = Path(resume)
        if folder.is_file() or folder.parent.name == "checkpoints":  # a checkpoint: its experiment is two levels up
            folder = folder.parent.parent
        else:
            start = "auto"
        if not (folder / "hparams.json").is_file():
            raise ConfigError(f"run.resume={resume!r}: not an experiment folder or a checkpoint in one (no hparams.json)")
    before = flat(json.loads((folder / "hparams.json").read_text()))
    now = flat(hparams)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"cannot resume {folder}: it was trained with different settings "
                          f"({'; '.join(f'{k}: {before.get(k)!r} -> {now.get(k)!r}' for k in changed)}); "
                          f"use --resume none to start a new run")
    return folder, start


def command_main(prog: str, doc: str, load, run, argv: list[str] | None = None, example: str = "") -> int:
    """Parse `--config FILE [--no-progress] [--key value ...]`, load the config with `load(path, overrides)`
    and `run(config, progress=...)` it. A user error ends with `error: ...` on stderr and status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                     epilog=f"Any config key can follow as --key value (e.g. {example}).")
    parser.add_argument("--config", help="a YAML config (see configs/); default: the built-in defaults")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher adds it; LOCAL_RANK is read
    args, overrides = parser.parse_known_args(argv)
    try:
        config = load(args.config, overrides)
        run(config, progress=not args.no_progress)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
