"""Profiles: every size a notebook uses (corpus slice, vocabulary, model, steps) comes from here.

`COURSE_PROFILE` picks one:

* `ci`  - what the test suite runs: seconds per notebook;
* `cpu` - a laptop: minutes per notebook (the default without a GPU);
* `gpu` - longer and better (the default when CUDA is present).

Outputs that nbval checks never depend on the profile; losses, timings and plots do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

import torch

from .paths import work_dir  # noqa: F401  (notebooks take it from here with the profile)
from .seeding import set_seed  # noqa: F401

PROFILE_NAMES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    name: str
    # notebook 01: tokenizer
    tokenizer_sentences: int | None  # English training sentences for the real tokenizer (None: all)
    vocab_size: int  # the course tokenizer's vocabulary
    fertility_vocab_sizes: tuple[int, ...]  # vocabularies for the size-vs-fertility plot
    # notebook 02: masking and packing
    masking_sentences: int | None  # English sentences for the masking statistics and padding plots
    batch_size: int  # sentences (or packed blocks) per batch
    # notebook 04: training
    train_sentences: int | None  # English training sentences (None: all of Brown's)
    eval_sentences: int  # held-out sentences, masked once (fixed masks)
    max_length: int  # tokens per sequence (a packed block): the model's max_length
    hidden_size: int  # the course model of notebook 07
    num_layers: int
    num_heads: int
    intermediate_size: int
    lm_batch_size: int  # packed blocks per update of notebook 04's runs (benchmarks/recipe.py: equal-cost sweep)
    lm_size: tuple[int, int, int, int]  # the recipe's model (notebooks 04, 05): hidden size, layers, heads, FFN width
    position: str  # the recipe's positions (notebooks 04, 05): "rotary" or "learned"
    init_std: float  # the recipe's initial weight scale (notebooks 04, 05)
    mlm_probability: float  # the masking rate the recipe trains with (notebooks 04, 05; eval masks stay at 15%)
    train_lr: float  # peak learning rate of notebook 07
    lm_lr: float  # peak learning rate of notebook 04's runs (benchmarks/recipe.py chose it at equal cost)
    ml_lr: float  # peak learning rate of notebook 05's runs
    train_warmup: int  # warmup updates of the notebook's main run
    train_steps: int  # optimizer updates of the notebook's main run
    position_steps: int  # updates of the learned-positions run compared with the main (rotary) run
    compare_steps: int  # updates of the side-by-side runs (resume demo, Hugging Face Trainer)
    curve_steps: int  # updates of each "what the loss looks like" run
    # notebook 05: multilingual sampling
    ml_fraction: float  # the share of each language's training sentences read (keeps the imbalance)
    ml_eval_sentences: int  # held-out sentences per language, masked once
    ml_vocab_size: int  # the shared multilingual tokenizer's vocabulary
    ml_max_length: int  # tokens per multilingual sentence (longer ones are cut)
    ml_batch_size: int  # sentences per multilingual batch (all of one language)
    ml_train_steps: int  # updates of each multilingual run (alpha = 1 and alpha = 0.3)
    # notebook 06: embedding-only transfer
    transfer_vocab_size: int  # the new (Portuguese) tokenizer's vocabulary
    transfer_train_sentences: int | None  # Portuguese training sentences (None: all)
    transfer_eval_sentences: int  # held-out Portuguese sentences, masked once
    transfer_head_steps: int  # updates that train the English MLM head on each frozen body
    transfer_steps: int  # updates of each arm on Portuguese (pretrained and random body, full, from scratch)
    transfer_seeds: int  # seeds of the transfer and control arms (their spread is measured)
    transfer_fill_mask: int  # held-out Portuguese sentences of the fill-mask comparison
    transfer_task_train: int  # labelled English help paragraphs of the zero-shot module classifier
    transfer_task_test: int | None  # Portuguese help paragraphs it is tested on (None: all of the valid split)
    transfer_probe_grid: tuple[float, ...]  # the classifiers' strengths C tried by cross-validation
    ds_steps: int  # updates of each one-process DeepSpeed run in notebook 07 (plain vs stage 0, resume)
    ds_rank_steps: int  # updates of each two-process ZeRO setup in notebook 07 (on the CPU, one thread each)
    # notebook 08: what pretraining buys
    task_pool: int | None  # training-file sentences the labels are drawn from (None: all 46,865)
    task_test: int | None  # test-file sentences scored (None: all 5,621 of brown.valid)
    task_sizes: tuple[int, ...]  # label counts of the learning curve (a count equal to the pool is drawn once)
    task_draws: int  # random draws of labelled sentences per label count
    finetune_sizes: tuple[int, ...]  # label counts the whole encoder is fine-tuned on
    finetune_draws: int  # draws per fine-tuning label count (the probe's first draws)
    finetune_steps: int  # updates of each fine-tuning run (batch 16), at least
    finetune_epochs: float  # passes over the labels of each fine-tuning run, at least
    finetune_lrs: tuple[float, ...]  # learning rates tried on the dev files
    finetune_dev: int  # dev-file sentences the learning rate is chosen on


PROFILES = {
    "ci": Profile(
        name="ci",
        tokenizer_sentences=8_000,
        vocab_size=2_000,
        fertility_vocab_sizes=(500, 1_000, 2_000),
        masking_sentences=5_000,
        batch_size=32,
        train_sentences=8_000,
        eval_sentences=300,
        max_length=64,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=256,
        lm_batch_size=32,
        lm_size=(64, 2, 2, 256),
        position="rotary",
        init_std=0.05,
        mlm_probability=0.4,
        train_lr=3e-3,
        lm_lr=3e-3,
        ml_lr=3e-3,
        train_warmup=6,
        train_steps=40,
        position_steps=20,
        compare_steps=8,
        curve_steps=16,
        ml_fraction=0.1,
        ml_eval_sentences=100,
        ml_vocab_size=2_000,
        ml_max_length=64,
        ml_batch_size=32,
        ml_train_steps=24,
        transfer_vocab_size=2_000,
        transfer_train_sentences=2_000,
        transfer_eval_sentences=40,
        transfer_head_steps=4,
        transfer_steps=4,
        transfer_seeds=2,
        transfer_fill_mask=20,
        transfer_task_train=80,
        transfer_task_test=80,
        transfer_probe_grid=(0.01, 1.0),
        ds_steps=4,
        ds_rank_steps=3,
        task_pool=600,
        task_test=300,
        task_sizes=(30,),
        task_draws=1,
        finetune_sizes=(30,),
        finetune_draws=1,
        finetune_steps=3,
        finetune_epochs=0.0,
        finetune_lrs=(1e-3,),
        finetune_dev=50,
    ),
    "cpu": Profile(
        name="cpu",
        tokenizer_sentences=None,
        vocab_size=8_000,
        fertility_vocab_sizes=(500, 1_000, 2_000, 4_000, 8_000, 16_000),
        masking_sentences=None,
        batch_size=32,
        train_sentences=None,
        eval_sentences=2_000,
        max_length=128,
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        intermediate_size=1024,
        lm_batch_size=16,
        lm_size=(128, 2, 2, 512),
        position="rotary",
        init_std=0.05,
        mlm_probability=0.4,
        train_lr=1e-3,
        lm_lr=4e-3,
        ml_lr=2e-3,
        train_warmup=490,
        train_steps=4900,
        position_steps=300,
        compare_steps=60,
        curve_steps=60,
        ml_fraction=1.0,
        ml_eval_sentences=1_000,
        ml_vocab_size=8_000,
        ml_max_length=64,
        ml_batch_size=64,
        ml_train_steps=1000,
        transfer_vocab_size=8_000,
        transfer_train_sentences=None,
        transfer_eval_sentences=1_000,
        transfer_head_steps=300,
        transfer_steps=600,
        transfer_seeds=2,
        transfer_fill_mask=200,
        transfer_task_train=4_000,
        transfer_task_test=None,
        transfer_probe_grid=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),  # notebook 08's (downstream.PROBE_GRID)
        ds_steps=20,
        ds_rank_steps=20,
        task_pool=15_000,
        task_test=None,
        task_sizes=(50, 100, 300, 1_000, 3_000),
        task_draws=3,
        finetune_sizes=(100,),
        finetune_draws=3,
        finetune_steps=100,
        finetune_epochs=16.0,
        finetune_lrs=(3e-4, 1e-3),
        finetune_dev=1_000,
    ),
}
# a GPU runs what a laptop runs, with bigger batches (later notebooks: bigger models, more steps)
PROFILES["gpu"] = replace(
    PROFILES["cpu"],
    name="gpu",
    batch_size=64,
    lm_batch_size=64,
    lm_size=(256, 4, 4, 1024),
    init_std=0.02,
    lm_lr=1e-3,
    ml_lr=1e-3,
    train_steps=4000,
    train_warmup=400,
    position_steps=1000,
    compare_steps=200,
    curve_steps=200,
    ml_batch_size=128,
    ml_train_steps=3000,
    transfer_head_steps=1000,
    transfer_steps=2000,
    transfer_seeds=3,
    ds_steps=200,
    task_pool=None,
    task_sizes=(50, 100, 300, 1_000, 3_000, 10_000, 46_865),
    finetune_sizes=(100, 1_000, 10_000),
    finetune_steps=600,
    finetune_epochs=10.0,
    finetune_lrs=(1e-4, 3e-4, 1e-3),
)


def default_profile_name() -> str:
    """`gpu` when CUDA is present, else `cpu`."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, else the one `COURSE_PROFILE` names, else the default for this machine."""
    name = name or os.environ.get("COURSE_PROFILE") or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"COURSE_PROFILE={name!r} is not a profile; choose one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def describe(profile: Profile) -> str:
    """One line per setting, for the top of a notebook."""
    return "\n".join(f"{f.name:>24} = {getattr(profile, f.name)}" for f in fields(profile))
