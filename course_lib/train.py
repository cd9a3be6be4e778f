"""The command-line trainer: `python -m course_lib.train --config configs/tiny.yaml [--key value ...]`.

It runs the whole pipeline of notebooks 01-04 on the shipped corpus (or on your own text files):
train (or load) a tokenizer, tokenise and pack the texts, build the model, train it with
`course_lib.training.train` in an experiment folder, evaluate on fixed masks, export it in Hugging
Face format (`{experiment}/hf/`), and print fill-mask predictions for a few held-out sentences.

With `--deepspeed configs/ds_zero2.json` it trains with DeepSpeed (notebook 07): alone on a CPU or a GPU,
or under a launcher, one process per GPU, on one machine or several:

    deepspeed --num_gpus 8 --module course_lib.train --config configs/base.yaml --deepspeed configs/ds_zero2.json
    torchrun --nproc_per_node 8 -m course_lib.train --config configs/base.yaml     # DistributedDataParallel

A config is a YAML file with three sections and a few top-level keys (see configs/):

    name: tiny                # experiment folders are {output_dir}/{name}.{date}.{uuid}/
    output_dir: runs
    resume: auto              # auto: continue the newest run of this name if it has a checkpoint;
                              # none: start afresh; or a checkpoint file / experiment folder
    data:  {corpus, train_files, eval_files, max_train_texts, max_eval_texts, tokenizer, vocab_size, block_size, ...}
    model: {hidden_size, num_layers, num_heads, intermediate_size, dropout, attention_dropout, pre_norm, masked_only}
    train: {max_steps, batch_size, grad_accum, lr, warmup_steps, schedule, precision, seed, ...}

Any key can be overridden on the command line, by its full name (`--train.lr 1e-3`) or, when the name
is unique, by itself (`--max_steps 100`, `--seed 1`). Unknown keys and bad values stop the run with a
message naming them, before anything is trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .training import TrainConfig

CORPORA = ("brown", "sotu", "brown+sotu", "files")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong kind; the message names it."""


@dataclass
class DataConfig:
    corpus: str = "brown"  # brown (English sentences), sotu (paragraphs), brown+sotu, or files (your own)
    train_files: list[str] = field(default_factory=list)  # corpus: files -- text files (.txt or .gz), one text per line
    eval_files: list[str] = field(default_factory=list)
    max_train_texts: int | None = None  # use the first N training texts (None: all)
    max_eval_texts: int | None = 2000
    tokenizer: str | None = None  # a saved tokenizer folder to use; None: train one on the training texts
    vocab_size: int = 8000  # of the tokenizer trained when `tokenizer` is None
    block_size: int = 128  # tokens per packed training block (and the model's max_length)
    mlm_probability: float = 0.15  # the training masks' rate; the held-out masks are always 15% (comparable runs)

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}: choose one of {', '.join(CORPORA)}")
        if self.corpus == "files" and not self.train_files:
            raise ConfigError("data.corpus=files needs data.train_files (text files, one text per line)")
        if self.corpus != "files" and (self.train_files or self.eval_files):
            raise ConfigError(f"data.train_files / data.eval_files are read only with data.corpus=files "
                              f"(data.corpus is {self.corpus!r})")
        for name in ("max_train_texts", "max_eval_texts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be a positive integer or null, got {value!r}")
        if self.block_size < 8:
            raise ConfigError(f"data.block_size must be at least 8, got {self.block_size}")
        if self.vocab_size < 261:
            raise ConfigError(f"data.vocab_size must be at least 261 (5 special tokens + 256 bytes), got {self.vocab_size}")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"data.mlm_probability must be between 0 and 1, got {self.mlm_probability}")


@dataclass
class ModelConfig:
    """The EncoderConfig fields you choose; vocab_size, max_length and pad_token_id come from the tokenizer
    and data.block_size."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pre_norm: bool = False  # True trains more stably at high learning rates, but cannot be exported to transformers
    masked_only: bool = False  # the MLM head only at masked positions: faster, same loss
    position: str = "learned"  # learned (RoBERTa, exports to RobertaForMaskedLM) or rotary (RoFormerForMaskedLM)
    init_std: float = 0.02  # standard deviation of the initial weights


@dataclass
class RunConfig:
    name: str = "mlm"
    output_dir: str = "runs"
    resume: str = "auto"
    device: str = "auto"  # auto: cuda if there is one, else cpu
    fill_mask: int = 5  # held-out sentences to show fill-mask predictions for (0: no fill-mask evaluation at all)
    deepspeed: str | None = None  # a DeepSpeed config (configs/ds_zero2.json ...): train with DeepSpeed
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ConfigError(f"device={self.device!r}: choose one of {', '.join(DEVICES)}")
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise ConfigError(f"name={self.name!r} must be a plain folder name")
        if self.fill_mask < 0:
            raise ConfigError(f"fill_mask must be >= 0, got {self.fill_mask}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- dicts, YAML and overrides -> config


def _coerce(value, kind, key: str):
    """`value` as the annotated type `kind` (int, float, bool, str, list[str], X | None); command-line
    strings are converted, anything else of the wrong kind raises ConfigError naming `key`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"{key}: no conversion to {kind}")


def _unknown(key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in known], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (known here: {', '.join(sorted(known))})")


def from_dict(cls, values: dict | None, where: str = ""):
    """Build the dataclass `cls` (with nested dataclass sections) from a dict, checking every key and value."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise _unknown(full, [f"{where}.{n}" if where else n for n in names])
        kind = hints[key]
        kwargs[key] = from_dict(kind, value, full) if dataclasses.is_dataclass(kind) else _coerce(value, kind, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # a section's own validation (EncoderConfig-like checks in TrainConfig)
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _all_keys(cls, where: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        full = f"{where}.{f.name}" if where else f.name
        keys += _all_keys(hints[f.name], full) if dataclasses.is_dataclass(hints[f.name]) else [full]
    return keys


def apply_overrides(values: dict, overrides: list[str], cls=RunConfig) -> dict:
    """`--key value` / `--key=value` pairs applied onto the nested dict `values` (a copy is returned).
    A key is its full dotted name or, when unique, its last part."""
    values = json.loads(json.dumps(values))  # a deep copy
    keys = _all_keys(cls)
    i = 0
    while i < len(overrides):
        item = overrides[i]
        if not item.startswith("--"):
            raise ConfigError(f"expected --key value, got {item!r}")
        if "=" in item:
            key, value = item[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(overrides):
                raise ConfigError(f"{item} has no value")
            key, value = item[2:], overrides[i + 1]
            i += 2
        matches = [k for k in keys if k == key] or [k for k in keys if k.rsplit(".", 1)[-1] == key]
        if not matches:
            raise _unknown(key, keys)
        if len(matches) > 1:
            raise ConfigError(f"--{key} is ambiguous: say which of {', '.join(matches)}")
        *sections, last = matches[0].split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{section} must be a mapping in the config")
        node[last] = value
    return values


def load_config(path=None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file (None: the defaults) with command-line overrides applied."""
    import yaml

    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    try:
        return from_dict(RunConfig, apply_overrides(values, list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


# --------------------------------------------------------------------------- the pipeline


def load_texts(config: DataConfig, split: str) -> list[str]:
    """The training ("train") or held-out ("eval") texts the config names."""
    from . import data

    limit = config.max_train_texts if split == "train" else config.max_eval_texts
    if config.corpus == "files":
        files = config.train_files if split == "train" else config.eval_files
        texts = [line for path in files for line in data.read_lines(path)]
        if split == "eval" and not files:  # no eval files: hold out the last 5% of the training texts
            all_train = [line for path in config.train_files for line in data.read_lines(path)]
            texts = all_train[len(all_train) - max(1, len(all_train) // 20):]
        elif split == "train" and not config.eval_files:
            texts = texts[:len(texts) - max(1, len(texts) // 20)]
    else:
        which = "train" if split == "train" else "valid"
        texts = []
        if "brown" in config.corpus:
            texts += data.english_sentences(which)
        if "sotu" in config.corpus:
            texts += data.english_paragraphs(which)
    texts = texts[:limit] if limit else texts
    if not texts:
        raise ConfigError(f"no {split} texts in data.corpus={config.corpus!r}")
    return texts


def prepare(config: RunConfig, tokenizer) -> tuple:
    """Tokenise and pack the training texts into [n_blocks, block_size]; mask the held-out texts once
    (fixed masks, packed the same way) into padded eval batches."""
    from . import masking, training

    block = config.data.block_size
    train_ids = tokenizer(load_texts(config.data, "train"), verbose=False)["input_ids"]
    blocks = masking.pack_sequences(train_ids, block, pad_token_id=tokenizer.pad_token_id)
    eval_ids = tokenizer(load_texts(config.data, "eval"), verbose=False)["input_ids"]
    eval_blocks = masking.pack_sequences(eval_ids, block, drop_last=False, pad_token_id=tokenizer.pad_token_id)
    # 15% whatever rate training uses, so that runs with different recipes answer the same questions
    masked = masking.fixed_eval_masks(list(eval_blocks), tokenizer, seed=0, mlm_probability=masking.EVAL_MLM_PROBABILITY)
    return blocks, training.eval_batches(masked, config.train.batch_size, tokenizer.pad_token_id)


# keys that may change when a run is resumed; any other difference means it would not be the same run
RESUMABLE_CHANGES = {"resume", "output_dir", "fill_mask", "device", "train.max_steps", "train.log_every",
                     "train.eval_every", "train.save_every", "train.keep_last"}


def _flat(values: dict, where: str = "") -> dict:
    out = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else key
        out.update(_flat(value, full) if isinstance(value, dict) else {full: value})
    return out


def experiment_folder(config: RunConfig) -> tuple[Path, bool]:
    """The folder to run in, and whether it continues an earlier run (see `resume`)."""
    from . import training

    hparams = config.to_dict()
    resume = config.resume
    if resume == "none":
        return training.new_experiment(config.output_dir, config.name, hparams), False
    if resume == "auto":
        folder = training.find_experiment(config.output_dir, config.name)
        if folder is None:
            return training.new_experiment(config.output_dir, config.name, hparams), False
    else:
        folder = Path(resume)
        if folder.is_file() or folder.parent.name == "checkpoints":  # a checkpoint: its experiment is two levels up
            folder = folder.parent.parent
        if not (folder / "hparams.json").is_file():
            raise ConfigError(f"resume={resume!r}: not an experiment folder or a checkpoint in one (no hparams.json)")
    before = _flat(json.loads((folder / "hparams.json").read_text()))
    now = _flat(hparams)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"cannot resume {folder}: it was trained with different settings "
                          f"({'; '.join(f'{k}: {before.get(k)!r} -> {now.get(k)!r}' for k in changed)}); "
                          f"use --resume none to start a new run")
    return folder, True


def launched() -> bool:
    """Whether a launcher (deepspeed, torchrun) started this process as one of several."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def run(config: RunConfig, *, progress: bool = True, on_step=None, show=print) -> dict:
    """The whole pipeline for `config`; returns {"folder", "eval", "fill_mask" (accuracy or None)}.

    With config.deepspeed, or under a launcher (several processes), every process runs this: process 0
    makes the experiment folder and the tokenizer, the others wait for them and read them."""
    import os

    import torch

    from . import masking, model as model_lib, tokenization, training
    from .device import get_device
    from .profiles import set_seed

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars between our lines
    rank, world_size, ds = 0, 1, None
    if config.deepspeed or launched():
        from . import distributed

        if config.deepspeed:  # read and checked before anything starts (the launcher has set WORLD_SIZE)
            ds = distributed.resolve_ds_config(distributed.load_ds_config(config.deepspeed), config.train,
                                               int(os.environ.get("WORLD_SIZE", "1")), f"{config.deepspeed}: ")
        rank, world_size = distributed.init_distributed()
    show = show if rank == 0 else (lambda *args, **kwargs: None)
    device = get_device(config.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    folder, resuming = _on_rank0(lambda: experiment_folder(config), world_size)
    show(f"experiment folder: {folder}{' (resuming)' if resuming else ''}")

    saved = folder / "tokenizer"
    _on_rank0(lambda: _make_tokenizer(config, saved, show), world_size)
    tokenizer = tokenization.load_tokenizer(saved)
    blocks, eval_data = prepare(config, tokenizer)
    show(f"data: {blocks.shape[0]:,} packed blocks of {blocks.shape[1]} tokens; "
         f"{sum(int((b['labels'] != -100).sum()) for b in eval_data):,} masked held-out tokens")

    set_seed(config.train.seed)
    encoder_config = model_lib.EncoderConfig(vocab_size=len(tokenizer), max_length=config.data.block_size,
                                             pad_token_id=tokenizer.pad_token_id, **dataclasses.asdict(config.model))
    model = model_lib.EncoderForMaskedLM(encoder_config).to(device)
    (folder / "encoder_config.json").write_text(json.dumps(encoder_config.to_dict(), indent=2) + "\n")
    show(f"model: {model.num_parameters():,} parameters on {device}; "
         f"{config.train.max_steps} steps of {config.train.batch_size * config.train.grad_accum} blocks")
    collator = masking.MLMCollator(tokenizer, mlm_probability=config.data.mlm_probability, seed=config.train.seed)
    start = None  # a fresh run
    if resuming:  # from the checkpoint named by --resume, else the newest in the folder
        start = Path(config.resume) if Path(config.resume).exists() else "auto"
    loop = None
    if ds is not None:
        loop = distributed.DeepSpeedLoop(model, config.train, ds)
        show(f"DeepSpeed: ZeRO stage {loop.stage}, {world_size} process(es), "
             f"{ds['train_micro_batch_size_per_gpu']} x {ds['gradient_accumulation_steps']} x {world_size} = "
             f"{ds['train_batch_size']} blocks per update")
    elif world_size > 1:
        loop = distributed.DDPLoop(model, config.train)
        show(f"DistributedDataParallel: {world_size} processes, {config.train.batch_size} blocks each per micro-batch")
    result = training.train(model, blocks, eval_data, config.train, collator=collator, folder=folder,
                            resume=start, progress=progress, on_step=on_step, loop=loop)
    if ds is not None:  # DeepSpeed's module may be 16-bit and (ZeRO-3) in shards: export full fp32 weights
        weights = loop.full_state_dict()
        model = model_lib.EncoderForMaskedLM(encoder_config)
        model.load_state_dict(weights)
    if rank != 0:
        return {"folder": folder, "eval": result, "fill_mask": None, "report": None}
    report = final_report(config, folder, model, tokenizer, blocks, eval_data, result, show)
    return {"folder": folder, "eval": result, "fill_mask": report["fill_mask_top1"], "report": report}


def final_report(config: RunConfig, folder: Path, model, tokenizer, blocks, eval_data, result: dict, show=print) -> dict:
    """The trained model next to the baselines on the same fixed masks, its Hugging Face export and its
    fill-mask answers; everything also written to {folder}/eval.json."""
    from . import model as model_lib
    from .baselines import NgramCounts

    counts = NgramCounts.fit(blocks, tokenizer)
    base = counts.score(eval_data)
    report = {"steps": config.train.max_steps, "eval_loss": result.get("loss"), "accuracy": result.get("acc"),
              "eval_tokens": base["tokens"], **{k: v for k, v in base.items() if k != "tokens"}}
    if result:
        show(f"held-out (fixed 15% masks, {base['tokens']:,} tokens): loss {result['loss']:.3f}, "
             f"masked-token accuracy {result['acc']:.1%}")
        show(f"  no-context baseline (unigram at <mask>, copy of a visible token): loss {base['no_context_loss']:.3f}, "
             f"accuracy {base['no_context_accuracy']:.1%}")
        show(f"  neighbour-count model (left and right neighbour counts): loss {base['neighbour_loss']:.3f}, "
             f"accuracy {base['neighbour_accuracy']:.1%}")
        gain = base["no_context_loss"] - result["loss"]
        show(f"  the model is {gain:.2f} nats {'below' if gain > 0 else 'above'} the no-context baseline"
             f"{'' if gain > 0.1 else ': it has not learned to use context yet'}")
    keys = ("fill_mask_top1", "fill_mask_top5", "distinct_answers", "neighbour_fill_mask_top1", "neighbour_fill_mask_top5",
            "most_frequent_answer_top1", "fill_mask_examples")
    report.update(dict.fromkeys(keys))
    if config.model.pre_norm:
        show("pre_norm models have no transformers twin: no Hugging Face export and no fill-mask pipeline "
             f"(the weights are in {folder / 'checkpoints'})")
    else:
        hf = model_lib.export_pretrained(model.cpu(), folder / "hf", tokenizer)
        show(f"exported in Hugging Face format: {hf}")
        if config.fill_mask:  # 0: no fill-mask evaluation (its keys stay null in eval.json)
            report.update(fill_mask_report(hf, load_texts(config.data, "eval"), config.fill_mask, counts, show=show))
    (folder / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _on_rank0(make, world_size: int):
    """make() on process 0; the others wait for it and get its result (a folder, a flag)."""
    if world_size == 1:
        return make()
    import torch.distributed as dist

    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _make_tokenizer(config: RunConfig, saved: Path, show) -> None:
    """The run's tokenizer in saved/: already there (a resumed run), copied from data.tokenizer, or trained."""
    from . import tokenization

    if (saved / "tokenizer.json").is_file():
        return
    if config.data.tokenizer:
        tokenizer = tokenization.load_tokenizer(config.data.tokenizer)
    else:
        texts = load_texts(config.data, "train")
        show(f"training a byte-level BPE tokenizer, vocab {config.data.vocab_size}, on {len(texts):,} texts")
        tokenizer = tokenization.train_tokenizer(texts, config.data.vocab_size, max_length=config.data.block_size)
    tokenizer.save_pretrained(str(saved))


def fill_mask_report(folder, texts: list[str], n: int, counts=None, show=print, seed: int = 0) -> dict:
    """`pipeline("fill-mask")` on the exported model in `folder`, judged on up to 200 held-out sentences
    with one whole-word token masked: top-1 and top-5 accuracy and the number of distinct answers, next to
    the neighbour-count model's (`counts`, a `baselines.NgramCounts`) and always answering the commonest
    word. Prints predictions for n of them."""
    from .training import fill_mask_examples, fill_mask_pipeline, fill_mask_scores, most_frequent_answer

    pipe = fill_mask_pipeline(folder)
    examples = fill_mask_examples(texts, pipe.tokenizer, 200, seed=seed)
    scores = fill_mask_scores(pipe, examples)
    word, commonest = most_frequent_answer(examples)
    report = {"fill_mask_top1": scores["top1"], "fill_mask_top5": scores["top5"],
              "distinct_answers": scores["distinct_answers"], "most_frequent_answer_top1": commonest,
              "fill_mask_examples": len(examples)}
    show(f"fill-mask on {len(examples)} held-out sentences: top-1 {scores['top1']:.1%}, top-5 {scores['top5']:.1%}, "
         f"{scores['distinct_answers']} distinct answers")
    if counts is not None:
        neighbour = counts.fill_mask(pipe.tokenizer, examples)
        report.update(neighbour_fill_mask_top1=neighbour["top1"], neighbour_fill_mask_top5=neighbour["top5"])
        show(f"  neighbour-count model: top-1 {neighbour['top1']:.1%}, top-5 {neighbour['top5']:.1%}, "
             f"{neighbour['distinct_answers']} distinct answers; always {word!r}: top-1 {commonest:.1%}")
    for (masked, answer), top in list(zip(examples, scores["predictions"]))[:n]:
        guesses = ", ".join(f"{p['token_str'].strip()!r} {p['score']:.2f}" for p in top[:3])
        show(f"  {masked}\n      answer {answer!r}; model: {guesses}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.train", description=__doc__.split("\n")[0],
                                     epilog="Any config key can follow as --key value (e.g. --max_steps 100 --train.lr 1e-3).")
    parser.add_argument("--config", help="a YAML config (see configs/); default: the built-in defaults")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher adds it; LOCAL_RANK is read
    args, overrides = parser.parse_known_args(argv)
    from .data import DataError
    from .distributed import DSConfigError

    try:
        config = load_config(args.config, overrides)
        run(config, progress=not args.no_progress)
    except (ConfigError, DSConfigError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
