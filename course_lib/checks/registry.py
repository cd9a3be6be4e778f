"""The exercise registry: the one place that says which exercises the course has, and for each its
notebook, title, points, checker, number of hidden cases, and the names that hand in the course's own
answer. The solution notebooks (their metadata and cells), the builder, the grader and the checkers
all follow it; `python -m course_admin.notebooks check` fails where a solution disagrees with it.

Importing it imports only the standard library: `Exercise.function` imports the checker's module (nbNN)
when asked, so the grader and the builder can read the registry without torch, transformers or deepspeed.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Exercise:
    """One exercise. `checker`: the name of its checker function in `course_lib.checks.nbNN` (NN =
    `notebook`). `hidden_cases`: how many hidden cases that checker runs in the grader's hidden mode.
    `references`: names that hand in the answer instead of writing it (the course's reference in course_lib,
    or the library the checker compares with); the grader only mentions them in its feedback, as a hint.
    `reference_bases`: course classes the exercise's class inherits from, whose `forward` is the answer too.
    `implementations`: where course_lib implements the answer ("module:function" or "module:Class.method",
    module under course_lib): while grading, the kernel's copy of course_lib has each replaced by a stub that
    raises, until the exercise has been judged. `twins`: qualified names of library functions that compute the
    answer (`Tokenizer.train_from_iterator`, `scaled_dot_product_attention`, `RobertaLayer.forward`): while
    the grader observes the exercise, a call to one from the student's code (directly or through any helper)
    is recorded and named to the instructor as a hint (`TWINS`; never a grade)."""

    id: str
    notebook: str
    title: str
    points: int
    checker: str
    hidden_cases: int
    references: frozenset[str]
    reference_bases: frozenset[str] = frozenset()
    implementations: frozenset[str] = frozenset()

    @property
    def twins(self) -> frozenset[str]:
        return TWINS.get(self.id, frozenset())

    def __post_init__(self):
        object.__setattr__(self, "references", frozenset(self.references))
        object.__setattr__(self, "reference_bases", frozenset(self.reference_bases))
        object.__setattr__(self, "implementations", frozenset(self.implementations))
        number = self.id.split(".")[0]
        if not (len(self.notebook) == 2 and self.notebook.isdigit() and number == str(int(self.notebook))):
            raise ValueError(f"exercise {self.id!r}: its number must start with its notebook's ({self.notebook!r})")
        if not self.checker.startswith("check_"):
            raise ValueError(f"exercise {self.id}: a checker's name starts with check_, not {self.checker!r}")

    @property
    def module(self) -> str:
        """The module that holds the checker: course_lib.checks.nb01 for notebook 01."""
        return f"{__package__}.nb{self.notebook}"

    @property
    def function(self) -> Callable:
        """The checker function itself (importing its module, with what that module imports)."""
        return getattr(importlib.import_module(self.module), self.checker)

    def info(self) -> dict:
        """The exercise as a notebook's `metadata.course.exercises` holds it."""
        return {"title": self.title, "points": self.points}


# a table, one exercise to a few lines: kept out of the formatter
# fmt: off
EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in [
    # notebook 01: Byte-pair encoding
    Exercise("1.1", "01", "the BPE training loop (train_bpe)", points=6, checker="check_train_bpe", hidden_cases=3,
             references={"train_bpe", "tokenizers_bpe", "tokenizers_vocab_and_merges", "BpeTrainer"},
             implementations={"tokenization:train_bpe", "tokenization:tokenizers_bpe",
                              "tokenization:tokenizers_vocab_and_merges"}),
    Exercise("1.2", "01", "encode a word with the learned merges (bpe_encode_word)", points=4,
             checker="check_bpe_encode_word", hidden_cases=2, references={"bpe_encode_word", "bpe_encode", "BPE"},
             implementations={"tokenization:bpe_encode_word"}),
    # notebook 02: the masking collator
    Exercise("2.1", "02", "dynamic 80/10/10 masking (mask_tokens)", points=5, checker="check_mask_tokens",
             hidden_cases=3, references={"mask_tokens", "apply_replacement", "MLMCollator", "fixed_eval_masks",
                                         "torch_mask_tokens", "DataCollatorForLanguageModeling"},
             implementations={"masking:mask_tokens", "masking:apply_replacement"}),
    Exercise("2.2", "02", "whole-word masking (whole_word_mask)", points=3, checker="check_whole_word_mask",
             hidden_cases=2, references={"whole_word_mask", "MLMCollator", "DataCollatorForWholeWordMask"},
             implementations={"masking:whole_word_mask"}),
    Exercise("2.3", "02", "sequence packing (pack_sequences)", points=2, checker="check_pack_sequences", hidden_cases=2,
             references={"pack_sequences"},
             implementations={"masking:pack_sequences"}),
    # notebook 03: the Transformer encoder
    Exercise("3.1", "03", "attention from matrix products (attention)", points=3, checker="check_attention",
             hidden_cases=2,
             references={"scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward"}),
    Exercise("3.2", "03", "multi-head self-attention (MultiHeadSelfAttention.forward)", points=3,
             checker="check_multi_head_attention", hidden_cases=2,
             references={"MultiheadAttention", "multi_head_attention_forward"},
             reference_bases={"MultiHeadSelfAttention"},
             implementations={"model:MultiHeadSelfAttention.forward"}),
    Exercise("3.3", "03", "a post-norm encoder block (EncoderBlock.forward)", points=2, checker="check_encoder_block",
             hidden_cases=1, references={"RobertaLayer"}, reference_bases={"EncoderBlock"},
             implementations={"model:EncoderBlock.forward"}),
    Exercise("3.4", "03", "the tied MLM head (TiedMLMHead)", points=2, checker="check_mlm_head", hidden_cases=1,
             references={"MLMHead", "RobertaLMHead"}, reference_bases={"MLMHead"},
             implementations={"model:MLMHead.forward"}),
    Exercise("3.5", "03", "rotary positions (rotate)", points=2, checker="check_rotary", hidden_cases=2,
             references={"apply_rotary", "rotary_tables", "apply_rotary_position_embeddings",
                         "RoFormerSinusoidalPositionalEmbedding", "RoFormerSelfAttention"},
             implementations={"model:apply_rotary", "model:rotary_tables"}),
    # notebook 04: the training loop
    Exercise("4.1", "04", "train_step", points=4, checker="check_train_step", hidden_cases=2,
             references={"train_step", "Trainer"},
             implementations={"training:train_step"}),
    Exercise("4.2", "04", "evaluate", points=3, checker="check_evaluate", hidden_cases=2,
             references={"evaluate", "Trainer"},
             implementations={"training:evaluate"}),
    Exercise("4.3", "04", "save and resume", points=3, checker="check_checkpoint", hidden_cases=1,
             references={"save_checkpoint", "load_checkpoint"},
             implementations={"checkpoints:save_checkpoint", "checkpoints:load_checkpoint"}),
    Exercise("4.4", "04", "the no-context baseline, token by token (no_context_token_loss)", points=3,
             checker="check_no_context_token_loss", hidden_cases=2,
             references={"no_context_token_loss", "no_context_probs", "NgramCounts"},
             implementations={"baselines:no_context_token_loss", "baselines:NgramCounts.no_context_probs",
                              "baselines:NgramCounts._visible_rule"}),
    # notebook 05: multilingual sampling
    Exercise("5.1", "05", "language_probabilities", points=4, checker="check_language_probabilities", hidden_cases=2,
             references={"language_probabilities", "expected_sentences"},
             implementations={"multilingual:language_probabilities", "multilingual:expected_sentences"}),
    Exercise("5.2", "05", "language_batches", points=6, checker="check_language_batches", hidden_cases=2,
             references={"LanguageBatchSampler"},
             implementations={"multilingual:LanguageBatchSampler._order", "multilingual:LanguageBatchSampler._take",
                              "multilingual:LanguageBatchSampler.__next__"}),
    # notebook 06: embedding-only transfer
    Exercise("6.1", "06", "freeze_all_but_embeddings", points=3, checker="check_freeze_all_but_embeddings",
             hidden_cases=2, references={"freeze_all_but_embeddings", "freeze_all_but"},
             implementations={"transfer:freeze_all_but_embeddings"}),
    Exercise("6.2", "06", "new_embedding_matrix", points=3, checker="check_new_embedding_matrix", hidden_cases=2,
             references={"new_embedding_matrix"},
             implementations={"transfer:new_embedding_matrix"}),
    Exercise("6.3", "06", "embedding_only_run", points=4, checker="check_embedding_only_run", hidden_cases=1,
             references={"embedding_only_run"},
             implementations={"transfer:embedding_only_run"}),
    # notebook 07: scaling with DeepSpeed
    Exercise("7.1", "07", "make_ds_config", points=3, checker="check_make_ds_config", hidden_cases=2,
             references={"ds_config"},
             implementations={"distributed:ds_config"}),
    Exercise("7.2", "07", "ds_train_step", points=4, checker="check_ds_train_step", hidden_cases=2,
             references={"ds_train_step"},
             implementations={"distributed:ds_train_step"}),
    Exercise("7.3", "07", "save_ds_checkpoint / load_ds_checkpoint", points=3, checker="check_ds_checkpoint",
             hidden_cases=1, references={"save_ds_checkpoint", "load_ds_checkpoint"},
             implementations={"distributed:save_ds_checkpoint", "distributed:load_ds_checkpoint"}),
    # notebook 08: what pretraining buys
    Exercise("8.1", "08", "mean pooling over the real tokens (mean_pool)", points=3, checker="check_mean_pool",
             hidden_cases=2, references={"mean_pool", "sentence_features"},
             implementations={"downstream:mean_pool"}),
    Exercise("8.2", "08", "a linear probe: logistic regression by L-BFGS (fit_probe)", points=4,
             checker="check_fit_probe", hidden_cases=2,
             references={"fit_probe", "probe_objective", "probe_arm", "sklearn_probe", "LogisticRegression"},
             implementations={"downstream:fit_probe", "downstream:probe_objective", "downstream:sklearn_probe"}),
]}

# checker name -> the module that defines it (what `course_lib.checks` loads on first use)
CHECKER_MODULES: dict[str, str] = {exercise.checker: exercise.module for exercise in EXERCISES.values()}
# fmt: on


def get(exercise: str, exercises: Mapping[str, Exercise] | None = None) -> Exercise:
    """The registry's entry for exercise "N.k"; a KeyError that says so if there is none."""
    exercises = EXERCISES if exercises is None else exercises
    try:
        return exercises[exercise]
    except KeyError:
        raise KeyError(
            f"exercise {exercise!r} is not in the exercise registry (course_lib/checks/registry.py), "
            f"which has {', '.join(exercises) or 'no exercises'}"
        ) from None


def for_notebook(notebook: str, exercises: Mapping[str, Exercise] | None = None) -> list[Exercise]:
    """The exercises of notebook "01" (or 1), in registry order."""
    notebook = f"{int(notebook):02d}"
    return [e for e in (EXERCISES if exercises is None else exercises).values() if e.notebook == notebook]


def notebooks(exercises: Mapping[str, Exercise] | None = None) -> list[str]:
    """The notebooks that have exercises: ["01", "02", ...]."""
    return sorted({e.notebook for e in (EXERCISES if exercises is None else exercises).values()})


def missing_checkers(exercises: Mapping[str, Exercise] | None = None) -> list[str]:
    """Registry entries whose checker is not a top-level function of its nbNN module, found by reading
    the module's source (nothing is imported)."""
    problems = []
    for exercise in (EXERCISES if exercises is None else exercises).values():
        path = HERE / f"nb{exercise.notebook}.py"
        if not path.exists():
            problems.append(
                f"exercise {exercise.id}: its checker {exercise.checker} should be in {path.name}, which does not exist"
            )
            continue
        defined = {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
        if exercise.checker not in defined:
            problems.append(f"exercise {exercise.id}: {path.name} defines no function {exercise.checker}")
    return problems


# What the grader runs in an exercise's place when the submission has no cell for it, or its cell ran past
# the time limit: the course's own implementation (which the judge hands back once the exercise is recorded
# as unreached), bound to the names the exercise defines, so the cells after it can run. Never the solution
# notebook's cell: its text would be in the student's kernel (`In`, `inspect.getsource`). Each stand-in
# passes its exercise's checker (tests/test_grade.py).
STAND_INS: dict[str, str] = {
    "1.1": "from course_lib.tokenization import train_bpe",
    "1.2": "from course_lib.tokenization import bpe_encode_word",
    "2.1": "from course_lib.masking import mask_tokens",
    "2.2": "from course_lib.masking import whole_word_mask",
    "2.3": "from course_lib.masking import pack_sequences",
    "3.1": """\
import torch.nn.functional as _F

def attention(q, k, v, mask=None):
    return _F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
""",
    "3.2": "from course_lib.model import MultiHeadSelfAttention",
    "3.3": "from course_lib.model import EncoderBlock",
    "3.4": """\
import torch as _torch
from torch import nn as _nn
from course_lib import model as _model

class TiedMLMHead(_nn.Module):
    def __init__(self, config, word_embeddings):
        super().__init__()
        head = _model.MLMHead(config)
        self.dense, self.layer_norm, self.word_embeddings = head.dense, head.layer_norm, word_embeddings
        self.bias = _nn.Parameter(_torch.zeros(config.vocab_size))

    def forward(self, x):
        return _nn.functional.linear(_model.MLMHead.transform(self, x), self.word_embeddings.weight, self.bias)
""",
    "3.5": """\
from course_lib import model as _model

def rotate(x, base=10000.0):
    cos, sin = _model.rotary_tables(x.shape[-2], x.shape[-1], base, device=x.device)
    return _model.apply_rotary(x, cos, sin)
""",
    "4.1": """\
from course_lib import training as _training

def train_step(model, micro_batches, optimizer, scheduler, max_grad_norm=1.0):
    return _training.train_step(model, micro_batches, optimizer, scheduler, max_grad_norm=max_grad_norm)["loss"]
""",
    "4.2": "from course_lib.training import evaluate",
    "4.3": """\
from course_lib import checkpoints as _checkpoints

def save_checkpoint(path, model, optimizer, scheduler, step):
    return _checkpoints.save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, step=step)

def load_checkpoint(path, model, optimizer, scheduler):
    return _checkpoints.load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)["step"]
""",
    "4.4": "from course_lib.baselines import no_context_token_loss",
    "5.1": "from course_lib.multilingual import language_probabilities",
    "5.2": """\
from course_lib.multilingual import LanguageBatchSampler as _Sampler

def language_batches(sizes, batch_size, alpha, num_batches, seed=0):
    sampler = _Sampler({lang: range(n) for lang, n in sizes.items()}, batch_size, alpha, seed)
    languages = [sampler.next_language() for _ in range(num_batches)]
    return [(lang, sampler._take(lang, batch_size)) for lang in languages]
""",
    "6.1": "from course_lib.transfer import freeze_all_but_embeddings",
    "6.2": "from course_lib.transfer import new_embedding_matrix",
    "6.3": "from course_lib.transfer import embedding_only_run",
    "7.1": """\
from course_lib import distributed as _distributed

def make_ds_config(micro_batch_size, grad_accum, world_size, precision="fp32", stage=0, offload_optimizer=False,
                   max_grad_norm=1.0):
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision={precision!r}: choose fp32, bf16 or fp16")
    return _distributed.ds_config(
        micro_batch_size, grad_accum, world_size, bf16=precision == "bf16", fp16=precision == "fp16", stage=stage,
        offload_optimizer=offload_optimizer, max_grad_norm=max_grad_norm,
    )
""",
    "7.2": """\
from course_lib import distributed as _distributed

def ds_train_step(engine, micro_batches):
    return _distributed.ds_train_step(engine, micro_batches)["loss"]
""",
    "7.3": "from course_lib.distributed import load_ds_checkpoint, save_ds_checkpoint",
    "8.1": "from course_lib.downstream import mean_pool",
    "8.2": """\
from course_lib import downstream as _downstream

def fit_probe(features, labels, num_classes, C=1.0):
    probe = _downstream.fit_probe(features, labels, num_classes, C)
    return probe.weight, probe.bias
""",
}


# The library functions that compute an exercise's answer: while the grader observes the exercise, each call to
# one that the student's code makes, directly or through any helper (a checker's own, say), is recorded and
# named to the instructor (course_lib.checks.grading). A Python function is "module:Qualified.name"; a
# compiled one, a piece of the name cProfile gives it ("'train_from_iterator' of 'tokenizers.Tokenizer'",
# "torch._C._nn.scaled_dot_product_attention>"). Only what the solution itself does not call (3.2 may use
# scaled_dot_product_attention, as the course model does; 3.1 may not).
ROBERTA = "transformers.models.roberta.modeling_roberta"
ROFORMER = "transformers.models.roformer.modeling_roformer"
COLLATORS = "transformers.data.data_collator"
ATTENTION_TWINS = {
    "torch.nn.modules.activation:MultiheadAttention.forward",
    "torch.nn.functional:multi_head_attention_forward",
    "._native_multi_head_attention>",
}
TWINS: dict[str, frozenset[str]] = {key: frozenset(value) for key, value in {
    "1.1": {"'train' of 'tokenizers.Tokenizer'", "'train_from_iterator' of 'tokenizers.Tokenizer'",
            "'get_trainer' of 'tokenizers.models"},
    "1.2": {"'encode' of 'tokenizers.Tokenizer'", "'encode_batch' of 'tokenizers.Tokenizer'",
            "'tokenize' of 'tokenizers.models"},
    "2.1": {f"{COLLATORS}:DataCollatorForLanguageModeling.torch_mask_tokens",
            f"{COLLATORS}:DataCollatorForLanguageModeling.torch_call", "course_lib.masking:MLMCollator.__call__"},
    "2.2": {f"{COLLATORS}:DataCollatorForWholeWordMask.torch_call",
            f"{COLLATORS}:DataCollatorForWholeWordMask._whole_word_mask"},
    "3.1": {"torch._C._nn.scaled_dot_product_attention>", "._scaled_dot_product_attention_math>",
            "._scaled_dot_product_flash_attention_for_cpu>", *ATTENTION_TWINS},
    "3.2": {f"{ROBERTA}:RobertaSelfAttention.forward", f"{ROBERTA}:RobertaAttention.forward", *ATTENTION_TWINS},
    "3.3": {f"{ROBERTA}:RobertaLayer.forward", "torch.nn.modules.transformer:TransformerEncoderLayer.forward"},
    "3.4": {f"{ROBERTA}:RobertaLMHead.forward"},
    "3.5": {f"{ROFORMER}:RoFormerSelfAttention.apply_rotary_position_embeddings",
            f"{ROFORMER}:RoFormerSinusoidalPositionalEmbedding.create_weight",
            f"{ROFORMER}:RoFormerSinusoidalPositionalEmbedding.forward"},
    "8.2": {"sklearn.linear_model._logistic:LogisticRegression.fit"},
}.items()}  # fmt: skip
