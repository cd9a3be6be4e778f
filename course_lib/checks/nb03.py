"""Checkers of notebook 03 (the Transformer encoder): exercises 3.1 attention, 3.2 multi-head
self-attention, 3.3 the encoder block, 3.4 the tied MLM head and 3.5 rotary positions, compared with
torch's attention and `transformers`' RoBERTa and RoFormer."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from transformers import RobertaForMaskedLM
from transformers.models.roformer.modeling_roformer import RoFormerSelfAttention, RoFormerSinusoidalPositionalEmbedding

from course_lib.model import EncoderConfig, from_roberta, roberta_config

from .framework import close, run_cases
from .nb04 import padded_batch


def _padding_mask(batch: int, seq: int, seed: int = 0):
    """bool [batch, 1, 1, seq], True at the keys to attend to: random lengths, at least 1."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    return (torch.arange(seq)[None, :] < lengths[:, None])[:, None, None, :]


def check_attention(attention: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.1: softmax(q k^T / sqrt(d) + mask) v from matmuls equals `F.scaled_dot_product_attention`."""

    def same_as_torch(batch, heads, seq, d, masked, seed):
        def case():
            g = torch.Generator().manual_seed(seed)
            q, k, v = (torch.randn(batch, heads, seq, d, generator=g) for _ in range(3))
            mask = _padding_mask(batch, seq, seed) if masked else None
            close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention output")

        return case

    def rows_sum_to_one_with_a_mask():  # values = identity: the output rows are the attention weights
        seq = 6
        q, k = torch.randn(1, 1, seq, 4), torch.randn(1, 1, seq, 4)
        mask = torch.tensor([True, True, True, False, False, False])[None, None, None, :]
        weights = attention(q, k, torch.eye(seq)[None, None], mask)
        close(weights.sum(-1), torch.ones(1, 1, seq), "each query's weights summed")
        assert (weights[..., 3:] == 0).all(), "masked keys (padding) must get exactly zero weight"

    def more_keys_than_queries():
        g = torch.Generator().manual_seed(5)
        q, k, v = (
            torch.randn(2, 3, 4, 16, generator=g),
            torch.randn(2, 3, 7, 16, generator=g),
            torch.randn(2, 3, 7, 16, generator=g),
        )
        mask = _padding_mask(2, 7, 5)
        close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention output")

    run_cases(
        "3.1",
        [
            ("one head, no mask", same_as_torch(1, 1, 5, 8, False, 0)),
            ("several heads, no mask", same_as_torch(2, 4, 7, 16, False, 1)),
            ("padding mask", same_as_torch(3, 2, 9, 8, True, 2)),
            ("scale by sqrt(head size)", same_as_torch(2, 2, 6, 64, False, 3)),
            ("weights sum to 1, padding gets 0", rows_sum_to_one_with_a_mask),
        ],
        hidden_cases=[
            ("8 heads of 32, padding mask", same_as_torch(2, 8, 11, 32, True, 4)),
            ("more keys than queries, padding mask", more_keys_than_queries),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_multi_head_attention(attention_class: type, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.2: multi-head self-attention equals `torch.nn.MultiheadAttention` with the same weights."""

    def same_as_torch(hidden, heads, batch, seq, masked, seed):
        def case():
            torch.manual_seed(seed)
            config = EncoderConfig(
                vocab_size=50,
                hidden_size=hidden,
                num_heads=heads,
                intermediate_size=4 * hidden,
                max_length=seq,
                attention_dropout=0.0,
                dropout=0.0,
            )
            ours = attention_class(config).eval()
            for p in ours.parameters():  # random biases too, so that a forgotten bias shows
                torch.nn.init.normal_(p, std=0.2)
            library = torch.nn.MultiheadAttention(hidden, heads, batch_first=True).eval()
            with torch.no_grad():
                library.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
                library.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
                library.out_proj.weight.copy_(ours.out.weight)
                library.out_proj.bias.copy_(ours.out.bias)
            x = torch.randn(batch, seq, hidden)
            mask = _padding_mask(batch, seq, seed) if masked else None
            expected, _ = library(
                x, x, x, key_padding_mask=None if mask is None else ~mask[:, 0, 0, :], need_weights=False
            )
            got = ours(x, mask)
            if masked:  # padded query rows are not compared: what a padded position computes is never used
                keep = mask[:, 0, 0, :]
                got, expected = got[keep], expected[keep]
            close(got, expected, "attention output")

        return case

    run_cases(
        "3.2",
        [
            ("one head", same_as_torch(16, 1, 2, 5, False, 0)),
            ("4 heads", same_as_torch(32, 4, 2, 7, False, 1)),
            ("4 heads, padding mask", same_as_torch(32, 4, 3, 9, True, 2)),
            ("8 heads of 8, padding mask", same_as_torch(64, 8, 2, 12, True, 3)),
        ],
        hidden_cases=[
            ("2 heads of 12, padding mask", same_as_torch(24, 2, 4, 10, True, 5)),
            ("a batch of one token", same_as_torch(16, 4, 1, 1, False, 6)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _roberta_pair(hidden=32, heads=4, layers=2, vocab=120, seed=0):
    """A randomly initialised RobertaForMaskedLM (eval mode) and the course model with its weights."""
    torch.manual_seed(seed)
    config = EncoderConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_heads=heads,
        num_layers=layers,
        intermediate_size=2 * hidden,
        max_length=24,
    )
    library = RobertaForMaskedLM(roberta_config(config)).eval()
    with torch.no_grad():  # random LayerNorms and biases too, so that a missing one shows
        for name, p in library.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return library, from_roberta(library).eval()


def check_encoder_block(block_class: type, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.3: a post-norm encoder block; the course model built from it gives RobertaForMaskedLM's logits."""

    def same_logits(hidden, heads, layers, seed):
        def case():
            library, ours = _roberta_pair(hidden, heads, layers, seed=seed)
            for i, old in enumerate(ours.layers):
                new = block_class(ours.config)
                new.load_state_dict(old.state_dict())
                ours.layers[i] = new.eval()
            ids, attention_mask = padded_batch(ours.config.vocab_size, seed=seed)
            with torch.no_grad():
                expected = library(input_ids=ids, attention_mask=attention_mask).logits
                got = ours(ids, attention_mask).logits
            keep = attention_mask.bool()
            close(got[keep], expected[keep], "logits at real tokens", atol=1e-4)

        return case

    run_cases(
        "3.3",
        [
            ("one block, as RobertaLayer", same_logits(32, 4, 1, 0)),
            ("three blocks, padding", same_logits(48, 3, 3, 1)),
        ],
        hidden_cases=[
            ("two blocks of 8 heads, other weights", same_logits(64, 8, 2, 2)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_mlm_head(head_class: type, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.4: the tied MLM head equals RobertaLMHead with the same weights, and adds no vocab x hidden matrix."""

    def same_as_roberta(seed, **sizes):
        def case():
            library, ours = _roberta_pair(seed=seed, **sizes)
            head = head_class(ours.config, ours.word_embeddings)
            head.load_state_dict(
                {
                    "dense.weight": library.lm_head.dense.weight,
                    "dense.bias": library.lm_head.dense.bias,
                    "layer_norm.weight": library.lm_head.layer_norm.weight,
                    "layer_norm.bias": library.lm_head.layer_norm.bias,
                    "bias": library.lm_head.bias,
                },
                strict=False,
            )
            x = torch.randn(2, 5, ours.config.hidden_size)
            with torch.no_grad():
                close(head(x), library.lm_head(x), "logits")

        return case

    def tied():
        _, ours = _roberta_pair()
        head = head_class(ours.config, ours.word_embeddings)
        own = sum(p.numel() for name, p in head.named_parameters() if p is not ours.word_embeddings.weight)
        h, v = ours.config.hidden_size, ours.config.vocab_size
        assert own == h * h + h + 2 * h + v, (
            f"the head holds {own} numbers of its own; tied, it has only dense "
            f"({h * h + h}), LayerNorm ({2 * h}) and the output bias ({v})"
        )
        head(torch.randn(2, 3, h)).sum().backward()
        grad = ours.word_embeddings.weight.grad
        assert grad is not None and grad.abs().sum() > 0, "no gradient reached the word embeddings through the head"

    def state_names():
        _, ours = _roberta_pair()
        names = set(dict(head_class(ours.config, ours.word_embeddings).named_parameters()))
        expected = {"dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"}
        assert expected <= names, (
            f"name the head's parts dense, layer_norm and bias; missing {sorted(expected - names)}"
        )

    run_cases(
        "3.4",
        [
            ("parts named dense, layer_norm, bias", state_names),
            ("as RobertaLMHead", same_as_roberta(0)),
            ("as RobertaLMHead, other weights", same_as_roberta(1)),
            ("tied to the word embeddings", tied),
        ],
        hidden_cases=[
            ("as RobertaLMHead, hidden 48, vocab 77", same_as_roberta(2, hidden=48, heads=3, vocab=77)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _roformer_rotation(x):
    """transformers' RoFormer rotation of x [..., seq, head] at positions 0..seq-1 (queries and keys alike)."""
    seq, head = x.shape[-2], x.shape[-1]
    table = RoFormerSinusoidalPositionalEmbedding(seq, head)
    sinusoid = table.create_weight()[None, None]  # [1, 1, seq, head]: sin in the first half, cos in the second
    rotated, _ = RoFormerSelfAttention.apply_rotary_position_embeddings(sinusoid, x, x)
    return rotated


def check_rotary(rotate: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.5: rotary positions turn each pair of a head's numbers by position x frequency, as RoFormer does."""

    def same_as_roformer(shape, seed):
        def case():
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
            close(rotate(x.clone()), _roformer_rotation(x), "rotated queries/keys")

        return case

    def position_zero_unchanged():
        x = torch.randn(2, 3, 5, 8)
        close(rotate(x.clone())[..., 0, :], x[..., 0, :], "position 0 (angle 0: no rotation)")

    def lengths_kept():
        x = torch.randn(1, 2, 9, 16)
        close(rotate(x.clone()).norm(dim=-1), x.norm(dim=-1), "length of each vector (a rotation keeps it)")

    def relative():  # the same query and key at every position: q_i . k_j depends on i - j only
        q, k = torch.randn(16), torch.randn(16)
        rq, rk = rotate(q.expand(1, 1, 12, 16).clone())[0, 0], rotate(k.expand(1, 1, 12, 16).clone())[0, 0]
        scores = rq @ rk.T
        for shift in (1, 3):
            close(scores.diagonal(shift)[1:], scores.diagonal(shift)[:-1], f"scores at distance {shift}", atol=1e-4)

    run_cases(
        "3.5",
        [
            ("position 0 is not rotated", position_zero_unchanged),
            ("as RoFormer, one head of 8", same_as_roformer((1, 1, 6, 8), 0)),
            ("as RoFormer, batch 2, 4 heads of 16", same_as_roformer((2, 4, 10, 16), 1)),
            ("a rotation keeps lengths", lengths_kept),
            ("scores depend on the distance only", relative),
        ],
        hidden_cases=[
            ("as RoFormer, head of 64, 128 positions", same_as_roformer((1, 2, 128, 64), 2)),
            ("as RoFormer, head of 2", same_as_roformer((3, 1, 5, 2), 3)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
