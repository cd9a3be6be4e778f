"""Checkers of notebook 03 (the Transformer encoder): exercises 3.1 attention, 3.2 multi-head
self-attention, 3.3 the encoder block, 3.4 the tied MLM head and 3.5 rotary positions, compared with
torch's attention and `transformers`' RoBERTa and RoFormer."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from transformers import RobertaForMaskedLM
from transformers.models.roformer.modeling_roformer import RoFormerSelfAttention, RoFormerSinusoidalPositionalEmbedding

from course_lib.model import EncoderConfig, _hf_names, roberta_config

from .framework import close, module_parameters, run_cases
from .nb04 import padded_batch


def _padding_mask(batch: int, seq: int, seed: int = 0):
    """bool [batch, 1, 1, seq], True at the keys to attend to: random lengths, at least 1."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    return (torch.arange(seq)[None, :] < lengths[:, None])[:, None, None, :]


def _randn(*shape: int, seed: int):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _expect_tensor(got, shape, what: str) -> None:
    """Raise an AssertionError unless `got` is a tensor of this shape (before comparing parts of it)."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(shape)}")


def check_attention(attention: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.1: softmax(q k^T / sqrt(d) + mask) v from matmuls equals `F.scaled_dot_product_attention`."""

    def same_as_torch(batch, heads, seq, d, masked, seed) -> tuple[Callable, Callable]:
        def inputs():
            g = torch.Generator().manual_seed(seed)
            q, k, v = (torch.randn(batch, heads, seq, d, generator=g) for _ in range(3))
            return q, k, v, _padding_mask(batch, seq, seed) if masked else None

        def judge(got):
            q, k, v, mask = inputs()
            close(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention output")

        return lambda: attention(*inputs()), judge

    def weights_inputs():  # values = identity: the output rows are the attention weights
        seq = 6
        g = torch.Generator().manual_seed(7)
        q, k = torch.randn(1, 1, seq, 4, generator=g), torch.randn(1, 1, seq, 4, generator=g)
        mask = torch.tensor([True, True, True, False, False, False])[None, None, None, :]
        return q, k, torch.eye(seq)[None, None], mask

    def rows_sum_to_one_with_a_mask(weights):
        seq = 6
        _expect_tensor(weights, (1, 1, seq, seq), "attention weights")
        close(weights.sum(-1), torch.ones(1, 1, seq), "each query's weights summed")
        assert (weights[..., 3:] == 0).all(), "masked keys (padding) must get exactly zero weight"

    def more_keys_inputs():
        g = torch.Generator().manual_seed(5)
        q, k, v = (
            torch.randn(2, 3, 4, 16, generator=g),
            torch.randn(2, 3, 7, 16, generator=g),
            torch.randn(2, 3, 7, 16, generator=g),
        )
        return q, k, v, _padding_mask(2, 7, 5)

    def more_keys_than_queries(got):
        q, k, v, mask = more_keys_inputs()
        close(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention output")

    run_cases(
        "3.1",
        [
            ("one head, no mask", *same_as_torch(1, 1, 5, 8, False, 0)),
            ("several heads, no mask", *same_as_torch(2, 4, 7, 16, False, 1)),
            ("padding mask", *same_as_torch(3, 2, 9, 8, True, 2)),
            ("scale by sqrt(head size)", *same_as_torch(2, 2, 6, 64, False, 3)),
            (
                "weights sum to 1, padding gets 0",
                lambda: attention(*weights_inputs()),
                rows_sum_to_one_with_a_mask,
            ),
        ],
        hidden_cases=[
            ("8 heads of 32, padding mask", *same_as_torch(2, 8, 11, 32, True, 4)),
            (
                "more keys than queries, padding mask",
                lambda: attention(*more_keys_inputs()),
                more_keys_than_queries,
            ),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_multi_head_attention(attention_class: type, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.2: multi-head self-attention equals `torch.nn.MultiheadAttention` with the same weights."""

    def weights_and_input(hidden, batch, seq, seed):
        """Random weights and biases (std 0.2, so that a forgotten bias shows) of the four projections
        query, key, value and out, as {name: (weight, bias)}, and the input x."""
        g = torch.Generator().manual_seed(seed)
        weights = {
            name: (torch.randn(hidden, hidden, generator=g) * 0.2, torch.randn(hidden, generator=g) * 0.2)
            for name in ("query", "key", "value", "out")
        }
        return weights, torch.randn(batch, seq, hidden, generator=g)

    def same_as_torch(hidden, heads, batch, seq, masked, seed) -> tuple[Callable, Callable]:
        def observe():
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
            weights, x = weights_and_input(hidden, batch, seq, seed)
            with torch.no_grad():
                for name, (weight, bias) in weights.items():
                    getattr(ours, name).weight.copy_(weight)
                    getattr(ours, name).bias.copy_(bias)
            return ours(x, _padding_mask(batch, seq, seed) if masked else None)

        def judge(got):
            weights, x = weights_and_input(hidden, batch, seq, seed)
            library = torch.nn.MultiheadAttention(hidden, heads, batch_first=True).eval()
            with torch.no_grad():
                library.in_proj_weight.copy_(torch.cat([weights[name][0] for name in ("query", "key", "value")]))
                library.in_proj_bias.copy_(torch.cat([weights[name][1] for name in ("query", "key", "value")]))
                library.out_proj.weight.copy_(weights["out"][0])
                library.out_proj.bias.copy_(weights["out"][1])
                mask = _padding_mask(batch, seq, seed) if masked else None
                expected, _ = library(
                    x, x, x, key_padding_mask=None if mask is None else ~mask[:, 0, 0, :], need_weights=False
                )
            if masked:  # padded query rows are not compared: what a padded position computes is never used
                _expect_tensor(got, expected.shape, "attention output")
                keep = mask[:, 0, 0, :]
                got, expected = got[keep], expected[keep]
            close(got, expected, "attention output")

        return observe, judge

    run_cases(
        "3.2",
        [
            ("one head", *same_as_torch(16, 1, 2, 5, False, 0)),
            ("4 heads", *same_as_torch(32, 4, 2, 7, False, 1)),
            ("4 heads, padding mask", *same_as_torch(32, 4, 3, 9, True, 2)),
            ("8 heads of 8, padding mask", *same_as_torch(64, 8, 2, 12, True, 3)),
        ],
        hidden_cases=[
            ("2 heads of 12, padding mask", *same_as_torch(24, 2, 4, 10, True, 5)),
            ("a batch of one token", *same_as_torch(16, 4, 1, 1, False, 6)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _roberta(hidden=32, heads=4, layers=2, vocab=120, seed=0):
    """A randomly initialised RobertaForMaskedLM (eval mode) and the course's EncoderConfig of the same
    architecture (the config `from_roberta` gives it)."""
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
    return library, config


def check_encoder_block(block_class: type, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.3: a post-norm encoder block; the course model built from it gives RobertaForMaskedLM's logits."""

    def same_logits(hidden, heads, layers, seed) -> tuple[Callable, Callable]:
        def observe():
            """The hidden states after the student's blocks, each with the weights of RoBERTa's layer, on
            RoBERTa's embeddings (the course model's `encode`, without its MLM head)."""
            library, config = _roberta(hidden, heads, layers, seed=seed)
            theirs, names = library.state_dict(), _hf_names(config)
            ids, attention_mask = padded_batch(config.vocab_size, seed=seed)
            mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
            with torch.no_grad():
                x = library.roberta.embeddings(input_ids=ids)
                for i in range(config.num_layers):
                    prefix = f"layers.{i}."
                    block = block_class(config)
                    block.load_state_dict(
                        {name[len(prefix) :]: theirs[hf] for name, hf in names.items() if name.startswith(prefix)}
                    )
                    x = block.eval()(x, mask)
            return x

        def judge(got):
            library, config = _roberta(hidden, heads, layers, seed=seed)
            ids, attention_mask = padded_batch(config.vocab_size, seed=seed)
            _expect_tensor(got, (*ids.shape, hidden), "hidden states after the blocks")
            with torch.no_grad():
                expected = library(input_ids=ids, attention_mask=attention_mask).logits
                got = library.lm_head(got.float())  # the course's head has RoBERTa's weights
            keep = attention_mask.bool()
            close(got[keep], expected[keep], "logits at real tokens", atol=1e-4)

        return observe, judge

    run_cases(
        "3.3",
        [
            ("one block, as RobertaLayer", *same_logits(32, 4, 1, 0)),
            ("three blocks, padding", *same_logits(48, 3, 3, 1)),
        ],
        hidden_cases=[
            ("two blocks of 8 heads, other weights", *same_logits(64, 8, 2, 2)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_mlm_head(head_class: type, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 3.4: the tied MLM head equals RobertaLMHead with the same weights, and adds no vocab x hidden matrix."""

    def word_embeddings(library):
        """The course model's word embeddings (its own module) with RoBERTa's weights."""
        weight = library.roberta.embeddings.word_embeddings.weight.detach().clone()
        return torch.nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=library.config.pad_token_id)

    def with_roberta_weights(head, library):
        """The head with RoBERTa's dense, LayerNorm and bias weights (nn.Module's own load_state_dict)."""
        weights = {
            "dense.weight": library.lm_head.dense.weight,
            "dense.bias": library.lm_head.dense.bias,
            "layer_norm.weight": library.lm_head.layer_norm.weight,
            "layer_norm.bias": library.lm_head.layer_norm.bias,
            "bias": library.lm_head.bias,
        }
        torch.nn.Module.load_state_dict(head, weights, strict=False)
        return head

    def same_as_roberta(seed, **sizes) -> tuple[Callable, Callable]:
        def observe():
            library, config = _roberta(seed=seed, **sizes)
            head = with_roberta_weights(head_class(config, word_embeddings(library)), library)
            with torch.no_grad():
                return head(_randn(2, 5, config.hidden_size, seed=seed))

        def judge(got):
            library, config = _roberta(seed=seed, **sizes)
            with torch.no_grad():
                close(got, library.lm_head(_randn(2, 5, config.hidden_size, seed=seed)), "logits")

        return observe, judge

    def observe_tied():
        library, config = _roberta()
        embeddings = word_embeddings(library)
        weight = embeddings.weight
        head = with_roberta_weights(head_class(config, embeddings), library)
        numel = torch._C.TensorBase.numel
        parameters = [(name, numel(p), p is weight) for name, p in module_parameters(head)]
        x = _randn(2, 3, config.hidden_size, seed=0)
        head(x).backward(_randn(2, 3, config.vocab_size, seed=7))  # the gradient on E is then known exactly
        logits = {}
        with torch.no_grad():  # the embeddings changed after the head was built: a tied head follows them
            for scale in ("1", "-1.5", "0"):
                embeddings.weight.copy_(word_embeddings(library).weight * float(scale))
                logits[scale] = head(x)
        return {"parameters": parameters, "embedding_grad": weight.grad, "logits": logits}

    def tied(got):
        # logits = t(x) E^T + b: with E scaled by a, a (logits - b) + b, where b is what E = 0 gives
        logits = got["logits"]
        close(logits["-1.5"], -1.5 * (logits["1"] - logits["0"]) + logits["0"], "logits once the embeddings changed")
        _, config = _roberta()
        own = sum(numel for _, numel, is_embedding in got["parameters"] if not is_embedding)
        h, v = config.hidden_size, config.vocab_size
        assert own == h * h + h + 2 * h + v, (
            f"the head holds {own} numbers of its own; tied, it has only dense "
            f"({h * h + h}), LayerNorm ({2 * h}) and the output bias ({v})"
        )
        grad = got["embedding_grad"]
        assert grad is not None and grad.abs().sum() > 0, "no gradient reached the word embeddings through the head"
        library, config = _roberta()
        head = library.lm_head
        with torch.no_grad():  # d(t(x) E^T)/dE for an upstream gradient g: g^T t(x)
            t = head.layer_norm(torch.nn.functional.gelu(head.dense(_randn(2, 3, config.hidden_size, seed=0))))
            expected = _randn(2, 3, config.vocab_size, seed=7).reshape(-1, config.vocab_size).T @ t.reshape(
                -1, config.hidden_size
            )
        close(grad, expected, "the gradient that reached the word embeddings")

    def observe_names():
        library, config = _roberta()
        return [name for name, _ in module_parameters(head_class(config, word_embeddings(library)))]

    def state_names(got):
        names = set(got)
        expected = {"dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"}
        assert expected <= names, (
            f"name the head's parts dense, layer_norm and bias; missing {sorted(expected - names)}"
        )

    run_cases(
        "3.4",
        [
            ("parts named dense, layer_norm, bias", observe_names, state_names),
            ("as RobertaLMHead", *same_as_roberta(0)),
            ("as RobertaLMHead, other weights", *same_as_roberta(1)),
            ("tied to the word embeddings", observe_tied, tied),
        ],
        hidden_cases=[
            ("as RobertaLMHead, hidden 48, vocab 77", *same_as_roberta(2, hidden=48, heads=3, vocab=77)),
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

    def rotated(shape, seed) -> Callable[[], object]:
        return lambda: rotate(_randn(*shape, seed=seed))

    def same_as_roformer(shape, seed) -> tuple[Callable, Callable]:
        def judge(got):
            close(got, _roformer_rotation(_randn(*shape, seed=seed)), "rotated queries/keys")

        return rotated(shape, seed), judge

    def position_zero_unchanged(got):
        x = _randn(2, 3, 5, 8, seed=10)
        _expect_tensor(got, x.shape, "rotated queries/keys")
        close(got[..., 0, :], x[..., 0, :], "position 0 (angle 0: no rotation)")

    def lengths_kept(got):
        x = _randn(1, 2, 9, 16, seed=11)
        _expect_tensor(got, x.shape, "rotated queries/keys")
        close(got.norm(dim=-1), x.norm(dim=-1), "length of each vector (a rotation keeps it)")

    def observe_relative():  # the same query and key at every position
        g = torch.Generator().manual_seed(12)
        q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
        return rotate(q.expand(1, 1, 12, 16).clone()), rotate(k.expand(1, 1, 12, 16).clone())

    def relative(got):  # q_i . k_j depends on i - j only
        rq, rk = got
        for r in (rq, rk):
            _expect_tensor(r, (1, 1, 12, 16), "rotated queries/keys")
        scores = rq[0, 0] @ rk[0, 0].T
        for shift in (1, 3):
            close(scores.diagonal(shift)[1:], scores.diagonal(shift)[:-1], f"scores at distance {shift}", atol=1e-4)

    run_cases(
        "3.5",
        [
            ("position 0 is not rotated", rotated((2, 3, 5, 8), 10), position_zero_unchanged),
            ("as RoFormer, one head of 8", *same_as_roformer((1, 1, 6, 8), 0)),
            ("as RoFormer, batch 2, 4 heads of 16", *same_as_roformer((2, 4, 10, 16), 1)),
            ("a rotation keeps lengths", rotated((1, 2, 9, 16), 11), lengths_kept),
            ("scores depend on the distance only", observe_relative, relative),
        ],
        hidden_cases=[
            ("as RoFormer, head of 64, 128 positions", *same_as_roformer((1, 2, 128, 64), 2)),
            ("as RoFormer, head of 2", *same_as_roformer((3, 1, 5, 2), 3)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
