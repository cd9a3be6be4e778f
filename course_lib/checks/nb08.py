"""Checkers of notebook 08 (what pretraining buys): exercises 8.1 `mean_pool` and 8.2 `fit_probe`, the second
compared with scikit-learn's `LogisticRegression` fitted to the same objective."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..downstream import one_thread
from .framework import close, run_cases

CLASSES_SHAPE = "weight [classes, features] and bias [classes]"


def _states(batch: int, seq: int, hidden: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, seq, hidden, generator=torch.Generator().manual_seed(seed))


def _mask(lengths, seq: int, left: bool = False, dtype=torch.long) -> torch.Tensor:
    mask = torch.zeros(len(lengths), seq, dtype=dtype)
    for row, n in enumerate(lengths):
        if left:
            mask[row, seq - n :] = 1
        else:
            mask[row, :n] = 1
    return mask


def _expected_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's real positions, one row at a time (written apart from course_lib's)."""
    rows = []
    for row in range(states.shape[0]):
        real = mask[row].bool()
        rows.append(states[row][real].mean(0) if real.any() else torch.zeros(states.shape[-1]))
    return torch.stack(rows)


def check_mean_pool(mean_pool: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 8.1: `mean_pool(hidden, attention_mask) -> [batch, hidden]`: the mean over the real tokens."""

    def same(lengths, seq=7, size=5, seed=0, left=False, dtype=torch.long, fill=None):
        def inputs():
            states, mask = _states(len(lengths), seq, size, seed), _mask(lengths, seq, left, dtype)
            if fill is not None:  # whatever sits at the padded positions
                states = torch.where(mask.bool().unsqueeze(-1), states, torch.full_like(states, fill))
            return states, mask

        def observe():
            return mean_pool(*inputs())

        def judge(got):
            states, mask = inputs()
            close(got, _expected_pool(states, mask), "the pooled features", atol=1e-5)

        return observe, judge

    run_cases(
        "8.1",
        [
            ("no padding: the plain mean over positions", *same([7, 7, 7])),
            ("padding at the end is left out", *same([7, 3, 5, 1])),
            ("what the padded positions hold does not matter", *same([6, 2, 4], fill=1e4)),
            ("a bool mask", *same([5, 2], dtype=torch.bool)),
        ],
        hidden_cases=[
            ("hidden: padding on the left", *same([2, 7, 4], left=True, seed=3)),
            ("hidden: a batch of one, one real token, wide states", *same([1], seq=9, size=33, seed=4, fill=-7.0)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )


def _problem(n: int, features: int, classes: int, seed: int, scale: float = 1.0):
    """A linearly entangled toy classification problem: features, labels (every class present)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * scale
    truth = rng.normal(size=(features, classes))
    labels = (x @ truth + rng.gumbel(size=(n, classes)) * 2.0).argmax(1)
    labels[:classes] = np.arange(classes)  # every class present
    return x, labels


def _sklearn_probabilities(x, labels, classes: int, C: float, test) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    # two classes: scikit-learn fits one weight vector d with penalty |d|^2 / 2; a softmax with a row per class
    # has at its optimum the rows -d/2 and d/2 and the penalty |d|^2 / 4: scikit-learn's C is then 2C
    sk_C = 2 * C if classes == 2 else C
    model = LogisticRegression(C=sk_C, tol=1e-10, max_iter=10_000).fit(x, labels)
    return model.predict_proba(test)


def check_fit_probe(fit_probe: Callable, hidden: bool | None = None, first_failure: bool = False) -> None:
    """Exercise 8.2: `fit_probe(features, labels, num_classes, C) -> (weight, bias)` minimising the mean
    cross-entropy + |weight|^2 / (2 C n): the class probabilities on new features must be scikit-learn's."""

    def same(n, features, classes, C, seed=0, scale=1.0):
        def observe():
            x, labels = _problem(n, features, classes, seed, scale)
            with one_thread():  # small matrices: see downstream.one_thread
                weight, bias = fit_probe(torch.tensor(x), torch.tensor(labels), classes, C)
            return {"weight": weight, "bias": bias}

        def judge(got):
            if not isinstance(got, dict) or not all(torch.is_tensor(got.get(k)) for k in ("weight", "bias")):
                raise AssertionError(f"expected two tensors, {CLASSES_SHAPE}")
            weight, bias = got["weight"].double(), got["bias"].double()
            if tuple(weight.shape) != (classes, features) or tuple(bias.shape) != (classes,):
                raise AssertionError(
                    f"expected {CLASSES_SHAPE} = [{classes}, {features}] and [{classes}], "
                    f"got {list(weight.shape)} and {list(bias.shape)}"
                )
            x, labels = _problem(n, features, classes, seed, scale)
            test, _ = _problem(50, features, classes, seed + 100, scale)
            got_p = torch.softmax(torch.tensor(test) @ weight.T + bias, -1).numpy()
            expected = _sklearn_probabilities(x, labels, classes, C, test)
            error = float(np.abs(got_p - expected).max())
            if not error <= 2e-3:
                raise AssertionError(
                    f"class probabilities on new features differ from scikit-learn's LogisticRegression(C={C}) "
                    f"by up to {error:.3f}: is the penalty |weight|^2 / (2 C n) with the mean cross-entropy, the "
                    f"bias left out of it, and did the optimiser converge (L-BFGS stops after max_iter=20 "
                    f"iterations unless told otherwise)?"
                )

        return observe, judge

    run_cases(
        "8.2",
        [
            ("4 classes, 10 features, C = 1", *same(200, 10, 4, 1.0)),
            ("strong regularisation, C = 0.01", *same(200, 10, 4, 0.01, seed=1)),
            ("weak regularisation, C = 100", *same(300, 8, 3, 100.0, seed=2)),
            ("15 classes, 32 features", *same(600, 32, 15, 0.3, seed=3)),
        ],
        hidden_cases=[
            ("hidden: two classes", *same(150, 12, 2, 0.5, seed=4)),
            ("hidden: more features than sentences", *same(40, 64, 5, 0.1, seed=5)),
        ],
        hidden=hidden,
        first_failure=first_failure,
    )
