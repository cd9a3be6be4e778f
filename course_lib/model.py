"""Notebook 03: a Transformer encoder for masked language modelling, written from scratch.

Read it top to bottom; it is the model of RoBERTa (and of BERT, minus next-sentence prediction):

    input_ids [batch, seq]
      -> embeddings: word + position + token type, then LayerNorm and dropout      [batch, seq, hidden]
      -> num_layers x EncoderBlock: self-attention and a feed-forward network,
         each wrapped in a residual connection and a LayerNorm                    [batch, seq, hidden]
      -> MLMHead: dense, GELU, LayerNorm, then a projection onto the vocabulary
         whose weight IS the word-embedding matrix ("tied")                       [batch, seq, vocab]
      -> cross-entropy at the positions the collator masked (labels != -100)

Every weight has a twin in `transformers.RobertaForMaskedLM`, so `from_roberta` / `to_roberta` copy
weights across and the two models give the same logits (the tests check 1e-5). Three switches go past
RoBERTa, recipes for cheaper pretraining that notebook 04 measures:

* `position="rotary"` drops the learned position table and instead rotates every query and key by an
  angle proportional to its position (RoFormer, Su et al. 2021; ModernBERT uses it): the score of query i
  against key j then depends on i - j only, so "look at my left neighbour" is easy to learn from the first
  update. Its twin is `transformers.RoFormerForMaskedLM` (`to_roformer` / `from_roformer`);

* `pre_norm=True` puts the LayerNorm *before* each sub-layer (x + f(LN(x))) and adds one after the
  last block: it trains stably at higher learning rates, but has no RoBERTa twin;
* `masked_only=True` runs the MLM head only where there is a label. With 15% masking this skips 85%
  of the biggest matrix product in the model (hidden x vocab) and of its softmax.

One more switch is no part of the config, because it is a measurement, not a recipe: under
`attention_window(model, k)` every token attends only to the tokens at most k positions away, in every
layer, so an L-layer model still reaches L * k tokens a side (layer 2 reads what layer 1 gathered).
`attention_window(model, reach(model, k))` limits the first layer to k and the others to the token itself:
the output at i then depends on tokens i - k .. i + k exactly. Notebook 04 measures what such cuts cost a
trained model, and why that measures the cut (an input the model never trained on) as much as the context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

POSITIONS = ("learned", "rotary")


# --------------------------------------------------------------------------- configuration
@dataclass
class EncoderConfig:
    """Every size and switch of the model. The defaults are a small model that trains on a laptop."""

    vocab_size: int = 8000
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024  # width of the feed-forward network, usually 4 x hidden_size
    max_length: int = 128  # longest input, in tokens
    pad_token_id: int = 1  # RoBERTa's <pad>
    dropout: float = 0.1  # on embeddings and on the output of every sub-layer
    attention_dropout: float = 0.1  # on the attention probabilities
    layer_norm_eps: float = 1e-5
    pre_norm: bool = False  # False: post-norm, as RoBERTa; True: pre-norm, plus a final LayerNorm
    masked_only: bool = False  # compute the MLM head only at positions with labels != -100
    position: str = "learned"  # "learned": RoBERTa's position table; "rotary": rotate queries and keys (RoFormer)
    init_std: float = 0.02  # standard deviation of the initial weights (BERT's and RoBERTa's 0.02)

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EncoderConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"EncoderConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}: each head gets hidden_size / num_heads dimensions"
            )
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"EncoderConfig.pad_token_id={self.pad_token_id!r} must be a token id, "
                f"0 <= id < vocab_size={self.vocab_size}"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"EncoderConfig.{name} must be a probability in [0, 1), got {value!r}")
        if not isinstance(self.init_std, (int, float)) or isinstance(self.init_std, bool) or not self.init_std > 0:
            raise ValueError(f"EncoderConfig.init_std must be > 0, got {self.init_std!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or not self.layer_norm_eps > 0:
            raise ValueError(f"EncoderConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        for name in ("pre_norm", "masked_only"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"EncoderConfig.position={self.position!r}: choose one of {', '.join(POSITIONS)}")
        if self.position == "rotary" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"EncoderConfig.position='rotary' rotates pairs of numbers, so the head size "
                f"hidden_size / num_heads = {self.hidden_size // self.num_heads} must be even"
            )

    @property
    def num_position_embeddings(self) -> int:
        """Rows of the position table: positions start at pad_token_id + 1 (see `position_ids`)."""
        return self.max_length + self.pad_token_id + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "EncoderConfig":
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown EncoderConfig field(s) {unknown}; known: {[f.name for f in dataclasses.fields(cls)]}"
            )
        return cls(**values)


def position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.LongTensor:
    """RoBERTa's positions (from fairseq): real tokens count pad_token_id + 1, + 2, ...; pads get pad_token_id.

    `[[0, 5, 6, 2, 1, 1]]` with pad id 1 gives `[[2, 3, 4, 5, 1, 1]]`. Pads point at the padding row of
    the position table, which stays zero; a left-padded sentence gets the same positions as unpadded.
    """
    not_pad = input_ids.ne(pad_token_id).long()
    return torch.cumsum(not_pad, dim=1) * not_pad + pad_token_id


def window_mask(seq_len: int, window: int, attention_mask: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """The bool attention mask of a window in one layer: query i may attend to key j when |i - j| <= window
    (itself included) and key j is not padding. [1, 1, seq, seq] without an attention_mask, else
    [batch, 1, seq, seq]. (`_layer_windows` turns a model's window into one int or None per layer.)

    A padded query keeps its own key too, so that no row is all False: the softmax of such a row is NaN
    (in `attention_weights`, and in some GPU kernels), and a NaN value times a zero weight is still NaN in
    the next layer. The real queries never see a padded key, so their outputs are unchanged."""
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError(f"an attention window must be an integer >= 0 (positions each side), got {window!r}")
    pos = torch.arange(seq_len, device=device)
    band = (pos[:, None] - pos[None, :]).abs() <= window  # [seq (queries), seq (keys)]
    if attention_mask is None:
        return band[None, None]
    keys = attention_mask.bool()[:, None, :] | torch.eye(seq_len, dtype=torch.bool, device=device)  # [batch, seq, seq]
    return (band & keys)[:, None]


def _layer_windows(window: int | Sequence[int | None] | None, num_layers: int) -> tuple[int | None, ...]:
    """One window per layer (None: that layer attends to everything): an int holds in every layer, a
    sequence must have one entry per layer. Raises ValueError for a bad entry or a wrong length."""
    if window is None or isinstance(window, int):
        windows = (window,) * num_layers
    elif isinstance(window, Sequence) and not isinstance(window, str):
        windows = tuple(window)
        if len(windows) != num_layers:
            raise ValueError(
                f"a per-layer attention window needs one entry per layer: {window!r} has {len(windows)} "
                f"entries, the model {num_layers} layers (reach(model, k) builds the right length)"
            )
    else:
        raise ValueError(
            f"an attention window must be an integer >= 0, None, or one of those per layer, got {window!r}"
        )
    for w in windows:
        if w is not None:
            window_mask(1, w)  # the check of one entry: an integer >= 0
    return windows


def reach(model_or_num_layers: EncoderForMaskedLM | int, k: int) -> tuple[int, ...]:
    """The per-layer window under which every output sees exactly k tokens a side: (k, 0, 0, ...), the first
    layer k positions each side and every later layer only the token itself, so the output at i depends on
    tokens i - k .. i + k and on none further. (An int window k holds in every layer and reaches L * k.)

        with attention_window(model, reach(model, 1)):   # what a bigram table sees: one neighbour a side
            training.evaluate(model, eval_data)"""
    if isinstance(model_or_num_layers, nn.Module):
        num_layers = len(model_or_num_layers.layers)
    else:
        num_layers = model_or_num_layers
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"reach needs a model or a number of layers >= 1, got {model_or_num_layers!r}")
    window_mask(1, k)  # k: an integer >= 0
    return (k,) + (0,) * (num_layers - 1)


def rotary_tables(
    seq_len: int, head_size: int, base: float = 10000.0, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each [seq_len, head_size]: position p turns the pair of numbers
    (2i, 2i+1) of a head by the angle p * base^(-2i / head_size), so both numbers of a pair share one angle."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64, device=device) / head_size)  # [head/2]
    angles = torch.arange(seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]  # [seq, head/2]
    angles = angles.repeat_interleave(2, dim=-1)  # [seq, head]: angle i for numbers 2i and 2i+1
    return angles.cos().float(), angles.sin().float()  # computed in float64, as transformers does


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every pair (x[2i], x[2i+1]) of the last dimension by its angle: [..., seq, head] -> same shape.
    (Exercise 3.5 writes the same rotation as one function, `rotate(x, base)`, computing the angles itself.)

    (a, b) turned by angle t is (a cos t - b sin t, b cos t + a sin t). Queries and keys both get it, so
    q_i . k_j depends on their positions only through i - j (a rotation by t_i then one by -t_j)."""
    pairs_swapped = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)  # (a, b) -> (-b, a)
    return x * cos.to(x.dtype) + pairs_swapped * sin.to(x.dtype)


# --------------------------------------------------------------------------- the building blocks
class MultiHeadSelfAttention(nn.Module):
    """Every token looks at every other token, `num_heads` times in parallel, in smaller subspaces."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.hidden_size // config.num_heads
        self.dropout = config.attention_dropout
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rotary=None) -> torch.Tensor:
        """x: [batch, seq, hidden]; mask: None, or bool [batch, 1, 1, seq] with True at keys to attend to;
        rotary: None, or the (cos, sin) tables of `rotary_tables` to turn queries and keys by their positions."""
        batch, seq, hidden = x.shape

        def heads(t):  # [batch, seq, hidden] -> [batch, heads, seq, head_size]
            return t.view(batch, seq, self.num_heads, self.head_size).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        # softmax(q k^T / sqrt(head_size)) v, in one fused kernel; the mask sends padded keys to -inf
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, seq, hidden))  # heads side by side again


class FeedForward(nn.Module):
    """The same two-layer network applied to each position on its own: dense -> GELU -> dense -> dropout."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))  # exact (erf) GELU, as RoBERTa


class EncoderBlock(nn.Module):
    """Attention then feed-forward, each with a residual connection and a LayerNorm.

    post-norm (RoBERTa): x = LN(x + drop(attn(x)));  x = LN(x + ffn(x))
    pre-norm:            x = x + drop(attn(LN(x)));  x = x + ffn(LN(x))
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.attention = MultiHeadSelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.feed_forward = FeedForward(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rotary=None) -> torch.Tensor:
        def attend(h):  # without rotary tables, the two-argument call that notebook 03's exercises write
            return self.attention(h, mask) if rotary is None else self.attention(h, mask, rotary)

        if self.pre_norm:
            x = x + self.dropout(attend(self.attention_norm(x)))
            return x + self.feed_forward(self.feed_forward_norm(x))
        x = self.attention_norm(x + self.dropout(attend(x)))
        return self.feed_forward_norm(x + self.feed_forward(x))


class MLMHead(nn.Module):
    """Hidden states -> a score for every vocabulary token: dense -> GELU -> LayerNorm -> decoder (+ bias).

    The decoder's weight is the word-embedding matrix itself (the model ties them): a token's output
    score is its embedding's dot product with the transformed hidden state. Only its bias is the head's own.
    (Exercise 3.4 writes it as `TiedMLMHead(config, word_embeddings)`, tying by holding the embedding module;
    this class keeps RoBERTa's layout, a decoder whose weight the model replaces, so that weights map
    one-to-one onto `RobertaLMHead`'s.)
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)  # weight replaced by the tied embeddings

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the projection onto the vocabulary: dense, GELU, LayerNorm."""
        return self.layer_norm(F.gelu(self.dense(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class ChunkedMLMLoss(torch.autograd.Function):
    """mean cross-entropy(hidden @ weight.T + bias, targets), computed `chunk` rows at a time.

    The plain head writes the whole [n, vocab] logits tensor (at 1,600 masked tokens and 8,000 words,
    51 MB), then reads and writes it again for the log-softmax, the loss and every backward step (notebook
    04's model: the chunked head makes its update 1.31x faster, benchmarks/speed.py --head-only). Here each chunk of
    rows is scored, turned into its gradient (softmax - one-hot) / n at once while it is still in the
    cache, and multiplied into the gradients of the hidden states, the weight and the bias; then it is
    thrown away. The matrix products are the same three as the plain head's (scores, and the two of the
    backward pass), nothing is computed twice, and the full logits never exist. The gradients are ready
    after the forward pass; `backward` only scales them by the incoming gradient. Same loss and
    gradients as `F.cross_entropy(hidden @ weight.T + bias, targets)` (tests: 1e-5).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        n = hidden.shape[0]
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight) if want_w else None
        grad_b = torch.zeros_like(bias) if want_b else None
        total = torch.zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
        for start in range(0, n, chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            rows = torch.arange(len(t), device=t.device)
            scores = torch.addmm(bias, h, weight.t())  # [chunk, vocab]: this chunk's logits
            lse = torch.logsumexp(scores, dim=1)
            total += (lse - scores[rows, t]).sum()
            if want_h or want_w or want_b:
                grad = scores.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the logits
                grad[rows, t] -= 1.0
                grad.mul_(1.0 / n)  # d(mean loss) / d(logits)
                if want_h:
                    torch.mm(grad, weight, out=grad_h[start : start + chunk])
                if want_w:
                    grad_w.addmm_(grad.t(), h)
                if want_b:
                    grad_b += grad.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return total / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scaled = [None if g is None else g * grad_loss for g in (grad_h, grad_w, grad_b)]
        return (*scaled, None, None)


def chunked_mlm_loss(hidden, weight, bias, targets, chunk: int = 128) -> torch.Tensor:
    """Mean cross-entropy of the tied projection `hidden @ weight.T + bias` against `targets` ([n] ids,
    all real: no -100), without the full [n, vocab] logits (`ChunkedMLMLoss`). fp32 only."""
    return ChunkedMLMLoss.apply(hidden, weight, bias, targets, chunk)


class MaskedLMOutput(NamedTuple):
    loss: torch.Tensor | None  # mean cross-entropy over labelled positions; None without labels
    logits: torch.Tensor | None  # [batch, seq, vocab], or [n_labelled, vocab] when masked_only and labels are given
    # (None in a masked_only training step: the chunked loss never builds them)


# --------------------------------------------------------------------------- the model
class EncoderForMaskedLM(nn.Module):
    """Embeddings -> `num_layers` encoder blocks -> MLM head (`_hf_names` maps the weights to HF's names).

    `model(input_ids, attention_mask, labels)` returns `MaskedLMOutput(loss, logits)`, like
    `RobertaForMaskedLM(input_ids=..., attention_mask=..., labels=...)` does.
    """

    # None: every token attends to every other one; k: only to those at most k positions away, in every
    # layer (reach L * k); a tuple: one int or None per layer (`reach(model, k)`: exactly k). A plain
    # attribute, not a config field: a measurement at evaluation time (`attention_window(model, k)`) that
    # neither checkpoints nor the transformers export carry
    attention_window: int | tuple[int | None, ...] | None = None
    loss_chunk = 128  # rows per chunk of the training loss with masked_only (0: the plain head, full logits)

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = None  # rotary: positions enter in every attention layer instead
        if config.position == "learned":
            self.position_embeddings = nn.Embedding(config.num_position_embeddings, h, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(1, h)  # RoBERTa's one-row table: a learned bias on every token
        self.embedding_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(h, eps=config.layer_norm_eps) if config.pre_norm else None
        self.head = MLMHead(config)
        self.apply(self._init_weights)
        self.head.decoder.weight = self.word_embeddings.weight  # tie: one Parameter, two uses

    def _init_weights(self, module: nn.Module) -> None:
        """As Hugging Face's BERT/RoBERTa: normal(0, init_std) weights, zero biases and padding rows,
        LayerNorm = identity."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _check_input(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_length:
            raise ValueError(
                f"input has {input_ids.shape[1]} tokens per sequence but config.max_length is "
                f"{self.config.max_length}; truncate the batch (tokenizer(..., truncation=True, "
                f"max_length={self.config.max_length})) or build a model with a larger max_length"
            )
        if input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if high >= self.config.vocab_size or low < 0:
                bad = high if high >= self.config.vocab_size else low
                raise ValueError(
                    f"token id {bad} is out of range for vocab_size={self.config.vocab_size} "
                    f"(ids must be 0..{self.config.vocab_size - 1}); does the tokenizer have more "
                    f"tokens than the model?"
                )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, "
                f"input_ids {tuple(input_ids.shape)}; they must match"
            )

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder without the head: [batch, seq] token ids -> [batch, seq, hidden] hidden states.

        attention_mask: 1 for real tokens, 0 for padding (as tokenizers return it); None means attend to
        everything, as in `transformers` (pad tokens still get the padding position). With
        `self.attention_window` set to k, each token sees only the tokens at most k positions away in every
        layer (so L * k after L layers); set to a tuple, layer l uses entry l (None: no window there).
        """
        self._check_input(input_ids, attention_mask)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        rotary = None
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids(input_ids, self.config.pad_token_id))
        else:  # positions 0, 1, 2, ... of the sequence; only their differences matter
            rotary = rotary_tables(
                input_ids.shape[1], self.config.hidden_size // self.config.num_heads, device=input_ids.device
            )
        x = self.embedding_dropout(self.embedding_norm(x))
        mask = None  # with no padding, no mask: scaled_dot_product_attention may then pick a faster kernel
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # [batch, 1 (all heads), 1 (all queries), seq (keys)]
        # one mask per layer: a window's band [1 or batch, 1, seq (queries), seq (keys)], padding left out,
        # built once for each distinct window; a layer without a window keeps the padding mask
        masks = {None: mask}
        padding = attention_mask if mask is not None else None
        windows = _layer_windows(self.attention_window, len(self.layers))
        for w in windows:
            if w not in masks:
                masks[w] = window_mask(input_ids.shape[1], w, padding, input_ids.device)
        for layer, w in zip(self.layers, windows):  # (x, mask) for learned positions: notebook 03's block fits
            x = layer(x, masks[w]) if rotary is None else layer(x, masks[w], rotary)
        return self.final_norm(x) if self.final_norm is not None else x

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> MaskedLMOutput:
        """Logits for every position and, given labels (-100 = no prediction there), the mean MLM loss.

        With config.masked_only and labels, only the labelled positions go through the head, and the
        logits come back as [n_labelled, vocab], in the order of `labels != -100` read row by row; in a
        training step (gradients on, fp32) the loss comes from `chunked_mlm_loss` instead, which never
        holds the full logits, and `logits` is None (set `model.loss_chunk = 0` for the plain head).
        """
        hidden = self.encode(input_ids, attention_mask)
        if labels is None:
            return MaskedLMOutput(None, self.head(hidden))
        if labels.shape != input_ids.shape:
            raise ValueError(
                f"labels have shape {tuple(labels.shape)}, input_ids {tuple(input_ids.shape)}; they must match"
            )
        if self.config.masked_only:
            where = labels != -100
            hidden, labels = hidden[where], labels[where]  # [n_labelled, hidden], [n_labelled]
            if self._chunked_loss(hidden):  # training: the loss without the full logits (logits=None)
                transformed = self.head.transform(hidden)
                loss = chunked_mlm_loss(
                    transformed, self.head.decoder.weight, self.head.decoder.bias, labels, self.loss_chunk
                )
                return MaskedLMOutput(loss, None)
        logits = self.head(hidden)
        # the loss in fp32 even when the weights are 16-bit (DeepSpeed's bf16, notebook 07); autocast does the same
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return MaskedLMOutput(loss, logits)

    def _chunked_loss(self, hidden: torch.Tensor) -> bool:
        """The chunked loss serves training steps in fp32 (gradients wanted, no autocast); evaluation wants
        the logits, and 16-bit runs keep the plain head (its loss is computed in fp32 anyway)."""
        return (
            self.loss_chunk > 0
            and torch.is_grad_enabled()
            and hidden.shape[0] > 0
            and hidden.dtype == torch.float32
            and self.head.decoder.weight.dtype == torch.float32
            and not torch.is_autocast_enabled(hidden.device.type)
        )

    def num_parameters(self, embeddings: bool = True) -> int:
        """Trainable numbers, each shared Parameter once; embeddings=False leaves out the embedding tables."""
        skip = set() if embeddings else {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


@contextlib.contextmanager
def attention_window(
    model: EncoderForMaskedLM, window: int | Sequence[int | None] | None
) -> Iterator[EncoderForMaskedLM]:
    """Within the `with` block every token of `model` attends only to the tokens at most `window` positions
    away (None: to all); afterwards the model attends as it did before, also when the block raised.

    An int window holds in every layer, so an L-layer model still reaches L * k tokens a side: under
    `attention_window(model, 1)` a 2-layer model's output at i depends on i - 2 .. i + 2. A sequence gives
    one window per layer (None: unrestricted there), and `reach(model, k)` = (k, 0, ..., 0) gives an exact
    reach of k tokens a side:

        with attention_window(model, reach(model, 1)):   # one neighbour a side, what a bigram table sees
            training.evaluate(model, eval_data)

    The weights stay as trained: a model that learned to read far context loses it here, and the rise in
    its loss measures how much it used it."""
    windows = _layer_windows(window, len(model.layers))  # a bad window fails here, not at the first forward
    if window is not None and not isinstance(window, int):
        window = windows  # a list is kept as a tuple
    before = model.attention_window
    model.attention_window = window
    try:
        yield model
    finally:
        model.attention_window = before


@torch.no_grad()
def attention_weights(
    model: EncoderForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """What every head of every layer looks at: one [batch, heads, seq (queries), seq (keys)] tensor of
    attention probabilities per layer. The model's forward uses a fused kernel that never returns them, so
    this runs the same computation step by step (in eval mode: no dropout)."""
    was_training = model.training
    model.eval()
    found = []

    def keep(module, args, kwargs, output):  # recompute softmax(q k^T / sqrt(d)) from the layer's inputs
        x = args[0]
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        rotary = args[2] if len(args) > 2 else kwargs.get("rotary")
        batch, seq, _ = x.shape
        q = module.query(x).view(batch, seq, module.num_heads, module.head_size).transpose(1, 2)
        k = module.key(x).view(batch, seq, module.num_heads, module.head_size).transpose(1, 2)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        scores = q @ k.transpose(-2, -1) / math.sqrt(module.head_size)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        found.append(scores.softmax(-1))

    hooks = [layer.attention.register_forward_hook(keep, with_kwargs=True) for layer in model.layers]
    try:
        model.encode(input_ids, attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return found


def neighbour_attention(weights: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[heads, 2]: the mean share of its attention each head puts on the token just before (column 0) and
    just after (column 1) each query, over the real (unpadded) queries of `weights` [batch, heads, seq, seq]."""
    batch, heads, seq, _ = weights.shape
    real = torch.ones(batch, seq, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    before = weights.diagonal(offset=-1, dim1=-2, dim2=-1)  # [batch, heads, seq - 1]: query i+1 -> key i
    after = weights.diagonal(offset=1, dim1=-2, dim2=-1)  # query i -> key i+1
    qb, qa = real[:, 1:] & real[:, :-1], real[:, :-1] & real[:, 1:]
    share_before = (before * qb[:, None]).sum((0, 2)) / qb.sum().clamp_min(1)
    share_after = (after * qa[:, None]).sum((0, 2)) / qa.sum().clamp_min(1)
    return torch.stack([share_before, share_after], dim=1)


def parameter_table(model: EncoderForMaskedLM) -> list[tuple[str, int]]:
    """Where the parameters are: (row, count) rows, the last one the total (= model.num_parameters())."""
    rows = {  # row: how its parameters' names start or what they contain, tried in this order
        "word embeddings": ("word_embeddings.",),
        "position embeddings": ("position_embeddings.",),
        "token type + embedding LayerNorm": ("token_type_embeddings.", "embedding_norm."),
        "attention (all layers)": (".attention.",),
        "feed-forward (all layers)": (".feed_forward.",),
        "layer norms (all layers)": ("layers.", "final_norm."),
        "MLM head (dense, LayerNorm, bias; decoder tied)": ("head.",),
    }
    counts = dict.fromkeys(rows, 0)
    for name, p in model.named_parameters():  # a shared Parameter comes once, under its first name
        row = next(row for row, keys in rows.items() if any(name.startswith(k) or k in name for k in keys))
        counts[row] += p.numel()
    return list(counts.items()) + [("total", sum(counts.values()))]


# --------------------------------------------------------------------------- the same weights in transformers
def _hf_names(config: EncoderConfig) -> dict[str, str]:
    """Our parameter name -> the name of the same tensor in the state dict of `RobertaForMaskedLM`
    (position="learned") or `RoFormerForMaskedLM` (position="rotary"). The two differ only in the prefix,
    the position table (RoFormer has none to learn) and the head's names."""
    body = "roberta" if config.position == "learned" else "roformer"
    names = {
        "word_embeddings.weight": f"{body}.embeddings.word_embeddings.weight",
        "token_type_embeddings.weight": f"{body}.embeddings.token_type_embeddings.weight",
    }
    if config.position == "learned":
        names["position_embeddings.weight"] = "roberta.embeddings.position_embeddings.weight"
        head = {"head.dense": "lm_head.dense", "head.layer_norm": "lm_head.layer_norm"}
        names["head.decoder.bias"] = "lm_head.bias"
    else:
        head = {
            "head.dense": "cls.predictions.transform.dense",
            "head.layer_norm": "cls.predictions.transform.LayerNorm",
        }
        names["head.decoder.bias"] = "cls.predictions.bias"
    parts = {"embedding_norm": f"{body}.embeddings.LayerNorm", **head}
    for i in range(config.num_layers):
        ours, theirs = f"layers.{i}.", f"{body}.encoder.layer.{i}."
        parts.update(
            {
                ours + "attention.query": theirs + "attention.self.query",
                ours + "attention.key": theirs + "attention.self.key",
                ours + "attention.value": theirs + "attention.self.value",
                ours + "attention.out": theirs + "attention.output.dense",
                ours + "attention_norm": theirs + "attention.output.LayerNorm",
                ours + "feed_forward.up": theirs + "intermediate.dense",
                ours + "feed_forward.down": theirs + "output.dense",
                ours + "feed_forward_norm": theirs + "output.LayerNorm",
            }
        )
    for ours, theirs in parts.items():
        names.update({f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"})
    return names


# HF tensors that are not weights of their own: buffers, RoFormer's fixed sinusoid table, and the tied
# decoder (its weight is the word embeddings, its bias the head's bias)
_HF_EXTRAS = {
    "roberta.embeddings.position_ids",
    "roberta.embeddings.token_type_ids",
    "lm_head.decoder.weight",
    "lm_head.decoder.bias",
    "roformer.encoder.embed_positions.weight",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
}


def _load_hf_state_dict(model: EncoderForMaskedLM, hf_model_or_state_dict, kind: str) -> None:
    state = hf_model_or_state_dict
    if isinstance(state, nn.Module):
        state = state.state_dict()
    names = _hf_names(model.config)
    missing = sorted(theirs for theirs in names.values() if theirs not in state)
    unexpected = sorted(set(state) - set(names.values()) - _HF_EXTRAS)
    if missing or unexpected:
        raise ValueError(
            f"{kind} weights do not fit a {model.config.num_layers}-layer EncoderForMaskedLM "
            f"(position={model.config.position!r}): missing {missing}, unexpected {unexpected}"
        )
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, theirs in names.items():
            source = state[theirs]
            if name == "token_type_embeddings.weight":
                source = source[:1]  # a 2-row BERT-style table: only row 0 is ever used without token_type_ids
            if source.shape != ours[name].shape:
                raise ValueError(
                    f"{theirs} has shape {tuple(source.shape)}, but {name} needs {tuple(ours[name].shape)}"
                )
            ours[name].copy_(source)
    word = names["word_embeddings.weight"]
    decoder = state.get("lm_head.decoder.weight" if kind == "RoBERTa" else "cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder, state[word]):
        raise ValueError(f"the decoder weight differs from the word embeddings: this {kind} is untied, ours is tied")


def load_roberta_state_dict(model: EncoderForMaskedLM, hf_model_or_state_dict) -> None:
    """Copy the weights of a `RobertaForMaskedLM` (or its state dict) into `model`, in place.

    Strict: every weight of `model` must be filled and every HF weight used; the error lists the names.
    """
    if model.config.position != "learned":
        raise ValueError("RoBERTa weights need a model with position='learned'")
    _load_hf_state_dict(model, hf_model_or_state_dict, "RoBERTa")


def load_roformer_state_dict(model: EncoderForMaskedLM, hf_model_or_state_dict) -> None:
    """Copy the weights of a `RoFormerForMaskedLM` (or its state dict) into a position="rotary" `model`, in place."""
    if model.config.position != "rotary":
        raise ValueError("RoFormer weights need a model with position='rotary'")
    _load_hf_state_dict(model, hf_model_or_state_dict, "RoFormer")


def _check_exportable(config: EncoderConfig, kind: str) -> None:
    if config.pre_norm:
        raise ValueError(
            f"EncoderConfig.pre_norm=True has no {kind} equivalent ({kind} is post-norm); "
            "train with pre_norm=False to export to transformers"
        )


def _hf_fields(config: EncoderConfig) -> dict:
    """The fields RobertaConfig and RoFormerConfig share, from ours (BERT's names: layers, heads, dropout ...)."""
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        type_vocab_size=1,
        initializer_range=config.init_std,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        bos_token_id=0,
        eos_token_id=2,
        tie_word_embeddings=True,
    )


def roberta_config(config: EncoderConfig):
    """The `transformers.RobertaConfig` of the same architecture (<s>=0 and </s>=2, as the course tokenizer)."""
    # here, not at the top: transformers' model code takes seconds to import, and only conversion needs it
    from transformers import RobertaConfig

    _check_exportable(config, "RoBERTa")
    if config.position != "learned":
        raise ValueError(
            f"EncoderConfig.position={config.position!r}: RoBERTa has learned positions; "
            f"export a rotary model with roformer_config / to_roformer"
        )
    return RobertaConfig(**_hf_fields(config), max_position_embeddings=config.num_position_embeddings)


def roformer_config(config: EncoderConfig):
    """The `transformers.RoFormerConfig` of the same architecture: rotary positions on queries and keys
    (not values), base 10000, no position table; embedding size = hidden size."""
    # here, not at the top: transformers' model code takes seconds to import, and only conversion needs it
    from transformers import RoFormerConfig

    _check_exportable(config, "RoFormer")
    if config.position != "rotary":
        raise ValueError(
            f"EncoderConfig.position={config.position!r}: RoFormer has rotary positions; "
            f"export a learned-position model with roberta_config / to_roberta"
        )
    return RoFormerConfig(
        **_hf_fields(config),
        max_position_embeddings=config.max_length,  # no position table: only the longest input
        embedding_size=config.hidden_size,
        rotary_value=False,
    )


def _from_hf_config(c, **fields) -> EncoderConfig:
    """The EncoderConfig of a BERT-like transformers config `c`; `fields` adds or overrides fields."""
    return EncoderConfig(
        **{
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "num_layers": c.num_hidden_layers,
            "num_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size,
            "pad_token_id": c.pad_token_id,
            "dropout": c.hidden_dropout_prob,
            "attention_dropout": c.attention_probs_dropout_prob,
            "layer_norm_eps": c.layer_norm_eps,
            "init_std": c.initializer_range,
            **fields,
        }
    )


def from_roberta(hf_model, **overrides) -> EncoderForMaskedLM:
    """A course model with the architecture and weights of a `RobertaForMaskedLM`.

    overrides: EncoderConfig fields to change that do not touch the weights, e.g. masked_only=True, dropout=0.0.
    """
    c = hf_model.config
    if (
        c.hidden_act != "gelu"
        or c.is_decoder
        or c.add_cross_attention
        or not c.tie_word_embeddings
        or not isinstance(c.pad_token_id, int)
    ):
        raise ValueError(
            f"only an encoder RoBERTa with exact GELU, tied embeddings and a pad token maps to "
            f"EncoderForMaskedLM; got hidden_act={c.hidden_act!r}, is_decoder={c.is_decoder}, "
            f"add_cross_attention={c.add_cross_attention}, tie_word_embeddings={c.tie_word_embeddings}, "
            f"pad_token_id={c.pad_token_id}"
        )
    model = EncoderForMaskedLM(
        _from_hf_config(c, max_length=c.max_position_embeddings - c.pad_token_id - 1, **overrides)
    )
    load_roberta_state_dict(model, hf_model)
    return model.train(hf_model.training)


def from_roformer(hf_model, **overrides) -> EncoderForMaskedLM:
    """A position="rotary" course model with the architecture and weights of a `RoFormerForMaskedLM`."""
    c = hf_model.config
    if (
        c.hidden_act != "gelu"
        or c.is_decoder
        or c.add_cross_attention
        or not c.tie_word_embeddings
        or c.rotary_value
        or c.embedding_size != c.hidden_size
        or not isinstance(c.pad_token_id, int)
    ):
        raise ValueError(
            f"only an encoder RoFormer with exact GELU, tied embeddings, embedding_size = hidden_size, "
            f"rotary_value False and a pad token maps to EncoderForMaskedLM; got hidden_act={c.hidden_act!r}, "
            f"is_decoder={c.is_decoder}, tie_word_embeddings={c.tie_word_embeddings}, "
            f"rotary_value={c.rotary_value}, embedding_size={c.embedding_size}, hidden_size={c.hidden_size}"
        )
    model = EncoderForMaskedLM(_from_hf_config(c, max_length=c.max_position_embeddings, position="rotary", **overrides))
    load_roformer_state_dict(model, hf_model)
    return model.train(hf_model.training)


def _copy_into(model: EncoderForMaskedLM, hf_model):
    names, theirs = _hf_names(model.config), hf_model.state_dict()  # state-dict tensors share the weights' memory
    with torch.no_grad():
        for name, p in model.named_parameters():
            theirs[names[name]].copy_(p)
    device = next(model.parameters()).device
    return hf_model.to(device).train(model.training)


def to_roberta(model: EncoderForMaskedLM):
    """The same model as a `transformers.RobertaForMaskedLM` (sdpa attention), on the same device and mode."""
    # here, not at the top: transformers' model code takes seconds to import, and only conversion needs it
    from transformers import RobertaForMaskedLM

    return _copy_into(model, RobertaForMaskedLM(roberta_config(model.config)))


def to_roformer(model: EncoderForMaskedLM):
    """The same position="rotary" model as a `transformers.RoFormerForMaskedLM`, on the same device and mode."""
    # here, not at the top: transformers' model code takes seconds to import, and only conversion needs it
    from transformers import RoFormerForMaskedLM

    return _copy_into(model, RoFormerForMaskedLM(roformer_config(model.config)))


def to_transformers(model: EncoderForMaskedLM):
    """The transformers twin of `model`: RobertaForMaskedLM (learned positions) or RoFormerForMaskedLM (rotary)."""
    return to_roberta(model) if model.config.position == "learned" else to_roformer(model)


def export_pretrained(model: EncoderForMaskedLM, folder, tokenizer=None) -> Path:
    """Save `model` (and its tokenizer) as a Hugging Face folder; return the folder.

    `AutoModelForMaskedLM.from_pretrained(folder)` loads it, and with a tokenizer so does
    `pipeline("fill-mask", model=folder, tokenizer=folder)`.
    """
    folder = Path(folder)
    if tokenizer is not None:
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                f"{model.config.vocab_size}: some ids would have no embedding"
            )
        if tokenizer.pad_token_id != model.config.pad_token_id:
            raise ValueError(
                f"tokenizer.pad_token_id={tokenizer.pad_token_id} but the model's "
                f"pad_token_id={model.config.pad_token_id}: positions would be wrong"
            )
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token, so fill-mask cannot use it")
    hf_model = to_transformers(model)  # raises for pre_norm models
    hf_model.save_pretrained(folder)
    if tokenizer is not None:
        # here, not at the top: tokenization imports transformers, which takes seconds
        from .tokenization import save_tokenizer

        save_tokenizer(tokenizer, folder)  # a tokenizer_config.json that transformers 4.x and 5.x both load
    return folder
