"""The one config schema of both command lines: sections `run`, `data`, `model`, `train`, and
`sampling` for the multilingual one. A quantity has one name everywhere: `data.max_length` (tokens per
sequence, the model's max_length), `data.mlm_probability` (the training masks' rate), `train.batch_size`,
`train.max_steps`, `train.lr`, `train.seed`.

    run:      name, output_dir, resume, device  (+ fill_mask, deepspeed | + mode, log_level)
    data:     tokenizer, vocab_size, max_length, mlm_probability, max_train_texts, max_eval_texts
              (+ corpus, train_files, eval_files | + train_folder, eval_folder, languages, min_length, split,
              tokenizer_sentences)
    model:    EncoderConfig's fields, less the three the data decides (vocab_size, max_length, pad_token_id)
    train:    training.TrainConfig
    sampling: alpha, mixed  (multilingual only)

Keys of earlier versions (`block_size`, a top-level `name`, the multilingual `common` / `dataset`
sections, `lang_sampling_factor` ...) stop with an error that names the new key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from ..config import ConfigError, load
from ..model import EncoderConfig
from ..training import TrainConfig

CORPORA = ("brown", "sotu", "brown+sotu", "files")
DEVICES = ("auto", "cpu", "cuda")
MODES = ("train", "evaluate", "both")
LOG_LEVELS = ("debug", "info", "warning", "error")
# the model's fields that the tokenizer and data.max_length set
FROM_DATA = ("vocab_size", "max_length", "pad_token_id")


def _plain_name(value: str, key: str) -> None:
    if not value or any(c in value for c in "/\\") or value.startswith("."):
        raise ConfigError(f"{key}={value!r} must be a plain folder name")


# --------------------------------------------------------------------------- run


@dataclass
class RunSection:
    name: str = "mlm"  # experiment folders are {output_dir}/{name}.{date}.{uuid}/
    output_dir: str = "runs"
    resume: str = (
        "auto"  # auto: continue the newest run of this name that has a checkpoint; none; or a folder/checkpoint
    )
    device: str = "auto"  # auto: cuda if there is one, else cpu

    def __post_init__(self):
        _plain_name(self.name, "run.name")
        if self.device not in DEVICES:
            raise ConfigError(f"run.device={self.device!r}: choose one of {', '.join(DEVICES)}")


@dataclass
class PretrainRun(RunSection):
    fill_mask: int = 5  # held-out sentences to show fill-mask predictions for (0: no fill-mask evaluation at all)
    deepspeed: str | None = None  # a DeepSpeed config (configs/ds_zero2.json ...): train with DeepSpeed

    def __post_init__(self):
        super().__post_init__()
        if self.fill_mask < 0:
            raise ConfigError(f"run.fill_mask must be >= 0, got {self.fill_mask}")


@dataclass
class MultilingualRun(RunSection):
    name: str = "multilingual"
    mode: str = "both"  # train, evaluate (the newest checkpoint of run.name), or both
    log_level: str = "info"

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in MODES:
            raise ConfigError(f"run.mode={self.mode!r}: choose one of {', '.join(MODES)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"run.log_level={self.log_level!r}: choose one of {', '.join(LOG_LEVELS)}")


# --------------------------------------------------------------------------- data


@dataclass
class DataSection:
    tokenizer: str | None = None  # a saved tokenizer folder to use; None: train one on the training texts
    vocab_size: int = 8000  # of the tokenizer trained when `tokenizer` is None
    max_length: int = 128  # tokens per sequence (a packed block, or a sentence cut to it); the model's max_length
    mlm_probability: float = 0.15  # the training masks' rate; the held-out masks are always 15% (comparable runs)
    max_train_texts: int | None = None  # read the first N training texts (per language) (None: all)
    max_eval_texts: int | None = 2000  # held-out texts (per language), masked once

    def __post_init__(self):
        for name in ("max_train_texts", "max_eval_texts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be a positive integer or null, got {value!r}")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be at least 8, got {self.max_length}")
        if self.vocab_size < 261:
            raise ConfigError(
                f"data.vocab_size must be at least 261 (5 special tokens + 256 bytes), got {self.vocab_size}"
            )
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"data.mlm_probability must be between 0 and 1, got {self.mlm_probability}")


@dataclass
class TextData(DataSection):
    corpus: str = "brown"  # brown (English sentences), sotu (paragraphs), brown+sotu, or files (your own)
    train_files: list[str] = field(default_factory=list)  # corpus: files -- text files (.txt or .gz), one text per line
    eval_files: list[str] = field(default_factory=list)  # none: the last 5% of the training texts

    def __post_init__(self):
        super().__post_init__()
        if self.corpus not in CORPORA:
            raise ConfigError(f"data.corpus={self.corpus!r}: choose one of {', '.join(CORPORA)}")
        if self.corpus == "files" and not self.train_files:
            raise ConfigError("data.corpus=files needs data.train_files (text files, one text per line)")
        if self.corpus != "files" and (self.train_files or self.eval_files):
            raise ConfigError(
                f"data.train_files / data.eval_files are read only with data.corpus=files "
                f"(data.corpus is {self.corpus!r})"
            )


@dataclass
class LanguageData(DataSection):
    max_eval_texts: int | None = 1000
    train_folder: str | None = None  # a folder of train.{lang}[.gz] files (None: the shipped data/multilingual)
    eval_folder: str | None = None  # where eval.{lang}[.gz] are (None: the train folder)
    languages: list[str] = field(default_factory=list)  # the languages to use (empty: every train.{lang} found)
    min_length: int = 2  # drop sentences of fewer tokens (special tokens not counted)
    split: float = 0.0  # > 0: hold out this fraction of each train.{lang} for eval instead of reading eval.{lang}
    tokenizer_sentences: int = 50_000  # sentences, drawn with sampling.alpha, to train the shared tokenizer on

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.split < 1:
            raise ConfigError(f"data.split must be in [0, 1), got {self.split}")
        for name in ("min_length", "tokenizer_sentences"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_length > self.max_length - 2:
            raise ConfigError(
                f"data.max_length={self.max_length} must leave room for "
                f"data.min_length={self.min_length} plus 2 special tokens"
            )


# --------------------------------------------------------------------------- model: EncoderConfig's own fields


def _model_section():
    hints = typing.get_type_hints(EncoderConfig)
    fields = [
        (f.name, hints[f.name], dataclasses.field(default=f.default))
        for f in dataclasses.fields(EncoderConfig)
        if f.name not in FROM_DATA
    ]

    def __post_init__(self):
        try:  # EncoderConfig's own checks (heads divide the hidden size, dropout is a probability ...)
            EncoderConfig(**dataclasses.asdict(self))
        except ValueError as e:
            raise ConfigError(str(e).replace("EncoderConfig.", "model.")) from None

    def encoder_config(self, vocab_size: int, max_length: int, pad_token_id: int) -> EncoderConfig:
        """The model's full config, once the tokenizer and data.max_length are known."""
        return EncoderConfig(
            vocab_size=vocab_size, max_length=max_length, pad_token_id=pad_token_id, **dataclasses.asdict(self)
        )

    doc = (
        "The EncoderConfig fields you choose (same names, same defaults, same checks); vocab_size, max_length "
        "and pad_token_id come from the tokenizer and data.max_length."
    )
    return dataclasses.make_dataclass(
        "ModelSection",
        fields,
        namespace={
            "__post_init__": __post_init__,
            "encoder_config": encoder_config,
            "__doc__": doc,
            "__module__": __name__,
        },
    )


ModelSection = _model_section()


# --------------------------------------------------------------------------- sampling (multilingual)


@dataclass
class SamplingSection:
    alpha: float = 0.3  # p_i proportional to n_i^alpha: 1 proportional, 0.7 mBERT, 0.3 XLM-R, 0 uniform
    mixed: bool = False  # True: every sentence draws its own language; False: one language per batch

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"sampling.alpha must be between 0 and 1, got {self.alpha}")


# --------------------------------------------------------------------------- the two configs


_RUN_KEYS = {f"{key}": f"run.{key}" for key in ("name", "output_dir", "resume", "device")}


@dataclass
class PretrainConfig:
    """`python -m course_lib.train`: the pipeline of notebooks 01-04 on one corpus."""

    RENAMED: typing.ClassVar[dict] = {
        **_RUN_KEYS,
        "fill_mask": "run.fill_mask",
        "deepspeed": "run.deepspeed",
        "data.block_size": "data.max_length",
    }
    run: PretrainRun = field(default_factory=PretrainRun)
    data: TextData = field(default_factory=TextData)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class MultilingualConfig:
    """`python -m course_lib.multilingual`: one model on many languages, each batch in a language drawn
    with probability proportional to n_i^alpha (notebook 05)."""

    RENAMED: typing.ClassVar[dict] = {
        "common": "run",
        "dataset": "data",
        "common.run_name": "run.name",
        "common.mode": "run.mode",
        "common.log_level": "run.log_level",
        "common.output_dir": "run.output_dir",
        "common.device": "run.device",
        **{
            f"{section}.{old}": new
            for section in ("dataset", "data")
            for old, new in {
                "lang_sampling_factor": "sampling.alpha",
                "mixed_batches": "sampling.mixed",
                "batch_size": "train.batch_size",
                "max_sentences": "data.max_train_texts",
                "eval_sentences": "data.max_eval_texts",
            }.items()
        },
        "run.run_name": "run.name",
    }
    run: MultilingualRun = field(default_factory=MultilingualRun)
    data: LanguageData = field(default_factory=LanguageData)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingSection = field(default_factory=SamplingSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_pretrain(path=None, overrides: list[str] = ()) -> PretrainConfig:
    """A PretrainConfig from a YAML file (None: the defaults) and `--key value` overrides."""
    return load(PretrainConfig, path, overrides)


def load_multilingual(path=None, overrides: list[str] = ()) -> MultilingualConfig:
    """A MultilingualConfig from a YAML file (None: the defaults) and `--key value` overrides."""
    return load(MultilingualConfig, path, overrides)
