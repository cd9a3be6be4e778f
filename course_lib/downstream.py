"""Notebook 08: what pretraining buys, measured on a task with labels.

Every Brown sentence carries the genre of the text it comes from (15 genres; informative prose A-J against
imaginative prose K-R). The held-out Brown files (`brown.valid`) were never seen by `models/brown-small`, so
they make an honest test set; the training files give the labelled pool and, as whole files held out, a dev
set. The question: with n labelled sentences, how well does a classifier do

* on **bag-of-words** features (TF-IDF of words and word pairs + logistic regression, the field's standard),
* on the **mean-pooled states** of a pretrained encoder, a linear probe (`mean_pool`, `fit_probe`),
* on those of a **random body** of the same shape (the control: it differs in the weights alone),
* on the mean of the pretrained **input embeddings** (the lexicon, no attention),
* and when the whole encoder is **fine-tuned** (`AutoModelForSequenceClassification`, `fine_tune`)?

    splits = genre_splits()                               # train / dev / test, no Brown file in two of them
    x = sentence_features(model, tokenizer, splits["train"].texts)   # [n, hidden], mean-pooled
    probe = fit_probe(x[:100], y[:100], num_classes=15, C=1.0)       # logistic regression, as scikit-learn's
    accuracy(probe.predict(x_test), y_test)

A probe here is exactly scikit-learn's `LogisticRegression` (multinomial, L2, the same objective; the tests
compare): it is written in torch so that a student sees it is one linear layer and a loss. Its strength `C`
is chosen by cross-validation on the labelled sentences alone, in folds that never split a Brown file
(`choose_C`), as is TF-IDF's: no arm ever sees a test label.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import quiet
from .data import brown_rows

# Brown's 15 genres (the corpus's categories, `cats.txt`), informative prose (A-J) then imaginative (K-R)
INFORMATIVE = (
    "news", "editorial", "reviews", "religion", "hobbies", "lore", "belles_lettres", "government", "learned",
)  # fmt: skip
IMAGINATIVE = ("fiction", "mystery", "science_fiction", "adventure", "romance", "humor")
GENRES = INFORMATIVE + IMAGINATIVE
# task -> its classes, in label order
TASKS = {"genre": GENRES, "informative": ("informative", "imaginative")}


# --------------------------------------------------------------------------- the task and its data


@dataclass
class LabelledSplit:
    """Sentences with the Brown file and genre each comes from."""

    texts: list[str]
    genres: list[str]
    files: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def labels(self, task: str = "genre") -> np.ndarray:
        """Class ids for `task` ("genre": 15 classes; "informative": informative 0, imaginative 1)."""
        return task_labels(self.genres, task)

    def subset(self, indices) -> LabelledSplit:
        indices = [int(i) for i in indices]
        return LabelledSplit(
            [self.texts[i] for i in indices], [self.genres[i] for i in indices], [self.files[i] for i in indices]
        )


def task_labels(genres, task: str = "genre") -> np.ndarray:
    """Genre names -> class ids of `task`; a ValueError names an unknown task or genre."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    unknown = sorted(set(genres) - set(GENRES))
    if unknown:
        raise ValueError(f"unknown Brown genre(s) {unknown}; the genres are {', '.join(GENRES)}")
    if task == "genre":
        index = {g: i for i, g in enumerate(GENRES)}
        return np.array([index[g] for g in genres], dtype=np.int64)
    return np.array([int(g in IMAGINATIVE) for g in genres], dtype=np.int64)


def genre_splits(dev_every: int = 10) -> dict[str, LabelledSplit]:
    """The genre task's three splits, split by Brown *file* (a text of about 2,000 words), never by sentence:

    * "test": `brown.valid`, every 10th Brown file (50 files): the files brown-small never saw;
    * "dev": of `brown.train`'s 450 files in sorted order, every `dev_every`-th (45): held-out training
      files, for choices that need labels beyond the labelled draw (the fine-tuning learning rate);
    * "train": the other training files: the pool the labelled sentences are drawn from.

    Sentences of one file share topic, names and style; a split by sentence would put near-copies of a test
    sentence's neighbours in training and flatter every arm."""
    if dev_every < 2:
        raise ValueError(f"dev_every={dev_every}: every dev_every-th training file goes to dev; it must be >= 2")
    rows = brown_rows("train")
    files = sorted({f for f, _, _ in rows})
    dev_files = {f for i, f in enumerate(files) if i % dev_every == dev_every - 1}
    splits = {}
    for name, part in (
        ("train", [r for r in rows if r[0] not in dev_files]),
        ("dev", [r for r in rows if r[0] in dev_files]),
        ("test", brown_rows("valid")),
    ):
        splits[name] = LabelledSplit([t for _, _, t in part], [g for _, g, _ in part], [f for f, _, _ in part])
    return splits


def draw(pool_size: int, n: int, seed: int) -> np.ndarray:
    """Indices of n labelled sentences drawn from a pool, uniformly without replacement. The draws of one
    seed are nested (the first n of one permutation), so a learning curve adds labels to the same sentences."""
    if not 0 < n <= pool_size:
        raise ValueError(f"cannot draw {n} labelled sentences from a pool of {pool_size}")
    return np.random.default_rng(seed).permutation(pool_size)[:n]


def class_counts(labels, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels), minlength=num_classes)


# --------------------------------------------------------------------------- features from an encoder


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, seq, hidden] states, [batch, seq] mask (1 real, 0 padding) -> [batch, hidden]: the mean of each
    sequence's real positions; padding does not count. A sequence with no real token gives zeros."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _fitting_length(model, max_length: int) -> int:
    """`max_length`, or fewer: the most positions `model` has (a model trained on shorter blocks, such as
    notebook 04's under `ci`, has fewer than 128, and a longer input would index past them)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length


def _batches(texts, batch_size: int, tokenizer, max_length: int):
    """Length-sorted batches of (indices, encoding), so that little padding is computed."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoding = tokenizer(
            [texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        yield chunk, encoding


@torch.inference_mode()
def sentence_features(
    model,
    tokenizer,
    texts,
    layer: str = "last",
    batch_size: int = 64,
    max_length: int = 128,
    pool=mean_pool,
    progress: bool = False,
) -> torch.Tensor:
    """[len(texts), hidden] float32 features, in the order of `texts`, from a transformers encoder (a
    `*ForMaskedLM` or its base model): `pool(states, attention_mask)` of the last layer's states
    (`layer="last"`) or of the input word embeddings alone (`layer="embeddings"`: the lexicon, no attention,
    no positions). Sentences longer than `max_length` tokens, or than the model's positions, are cut."""
    if layer not in ("last", "embeddings"):
        raise ValueError(f"layer={layer!r}: choose 'last' (the encoder's output) or 'embeddings' (the input rows)")
    if len(texts) == 0:
        raise ValueError("no texts to encode")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    body = model.base_model
    out = torch.empty(len(texts), model.config.hidden_size)
    batches = _batches(list(texts), batch_size, tokenizer, _fitting_length(model, max_length))
    for chunk, encoding in tqdm(batches, total=math.ceil(len(texts) / batch_size), disable=not progress, leave=False):
        ids, mask = encoding["input_ids"].to(device), encoding["attention_mask"].to(device)
        if layer == "embeddings":
            states = model.get_input_embeddings()(ids)
        else:
            states = body(input_ids=ids, attention_mask=mask).last_hidden_state
        out[chunk] = pool(states, mask).float().cpu()
    model.train(was_training)
    return out


def random_like(model, seed: int = 0):
    """A model of the same type and shape as `model`, every weight freshly initialised from `seed` (as
    transformers initialises a model it builds from a config): the control body. The global random state is
    untouched."""
    with torch.random.fork_rng(devices=[]), quiet.transformers_quiet():
        torch.manual_seed(seed)
        fresh = type(model)(copy.deepcopy(model.config))
    return fresh.to(next(model.parameters()).device).eval()


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Every feature scaled to mean 0 and standard deviation 1 on `train` (the labelled sentences only); the
    same shift and scale applied to `others`. A constant feature is only shifted."""
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


# --------------------------------------------------------------------------- the probe: logistic regression


@dataclass
class Probe:
    """A linear classifier: logits = features @ weight.T + bias."""

    weight: torch.Tensor  # [classes, features]
    bias: torch.Tensor  # [classes]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight.dtype) @ self.weight.T + self.bias

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).softmax(-1)

    def predict(self, features: torch.Tensor) -> np.ndarray:
        return self.logits(features).argmax(-1).numpy()


def probe_objective(weight, bias, features, labels, C: float) -> torch.Tensor:
    """scikit-learn's multinomial logistic regression objective, divided by C * n: the mean cross-entropy plus
    ||weight||^2 / (2 C n). The bias is not penalised."""
    n = features.shape[0]
    return F.cross_entropy(features @ weight.T + bias, labels) + (weight**2).sum() / (2.0 * C * n)


@contextlib.contextmanager
def one_thread():
    """torch on one math thread inside the block. The probe's matrices are small (at most a few thousand rows
    by a few hundred columns): one thread runs them as fast as two, and on a 2-core machine where another
    process also computes, two threads per process made each L-BFGS step 20 to 40 times slower (measured:
    0.1 s against 2.7 s for two fits of 3,000 x 256, 15 classes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_probe(features, labels, num_classes: int, C: float = 1.0, max_iter: int = 300, tol: float = 1e-6) -> Probe:
    """The probe minimising `probe_objective` (convex: one optimum, the one scikit-learn's
    `LogisticRegression(C=C)` finds), by full-batch L-BFGS in float64, starting from zeros. Classes with no
    labelled example are never predicted (logit -inf), as in scikit-learn, which only knows the classes it saw."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be [n, d] and labels [n]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be 0..{num_classes - 1}; got {int(y.min())}..{int(y.max())}")
    # a class with no labelled sentence has no finite optimum (its bias would fall forever): as scikit-learn,
    # fit the classes present; an absent class gets logit -inf, probability 0
    present = torch.unique(y)
    y = torch.searchsorted(present, y)
    weight = torch.zeros(len(present), x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(present), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = probe_objective(weight, bias, x, y, C)
        loss.backward()
        return loss

    with torch.enable_grad(), one_thread():
        optimizer.step(closure)
    full_weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    full_bias = torch.full((num_classes,), -math.inf, dtype=torch.float64)
    full_weight[present], full_bias[present] = weight.detach(), bias.detach()
    return Probe(full_weight, full_bias)


def sklearn_probe(features, labels, C: float = 1.0):
    """scikit-learn's `LogisticRegression` fitted to the same objective, tightly (what `fit_probe` is checked
    against)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(np.asarray(features), np.asarray(labels))


# --------------------------------------------------------------------------- choosing C, scoring


def scores(predicted, gold, num_classes: int) -> dict:
    """{"accuracy", "macro_f1"}: macro-F1 averages the F1 of every class, so a rare genre counts as much as a
    common one (a class never predicted and never present counts 0, as in scikit-learn with zero_division=0)."""
    from sklearn.metrics import f1_score

    predicted, gold = np.asarray(predicted), np.asarray(gold)
    return {
        "accuracy": float((predicted == gold).mean()),
        "macro_f1": float(f1_score(gold, predicted, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }


PROBE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # C of the probes (features standardised)
TFIDF_GRID = (0.1, 1.0, 10.0, 100.0, 1e3)  # C of TF-IDF + logistic regression (rows of unit length)


def folds_by_group(groups, folds: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Indices of the labelled sentences cut into `folds` parts with no group (Brown file) in two parts: the
    groups in a random order, each into the part with the fewest sentences so far."""
    groups = np.asarray(groups)
    names = np.unique(groups)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for name in np.random.default_rng(seed).permutation(names):
        min(parts, key=len).extend(np.flatnonzero(groups == name).tolist())
    return [np.array(sorted(part), dtype=int) for part in parts]


def choose_C(fit_predict, labels, grid=PROBE_GRID, folds: int = 3, seed: int = 0, groups=None) -> tuple[float, dict]:
    """The C of `grid` with the best cross-validated accuracy on the labelled sentences alone, and every C's
    mean accuracy. `fit_predict(train_idx, valid_idx, C)` trains on one part of the labelled set and predicts
    the other. With `groups` (each sentence's Brown file) no file is in two folds (`folds_by_group`): split
    by sentence, a validation sentence's neighbours from its own text sit in the training part, and the
    cross-validation rewards memorising a text's names and topics, which the test files do not share. Without
    groups the folds are random. Ties go to the smaller C (the simpler model)."""
    labels = np.asarray(labels)
    if groups is None:
        parts = np.array_split(np.random.default_rng(seed).permutation(len(labels)), folds)
    else:
        if len(groups) != len(labels):
            raise ValueError(f"need a group for every label; got {len(groups)} groups and {len(labels)} labels")
        parts = folds_by_group(groups, folds, seed)
    means = {}
    for C in grid:
        accs, weights = [], []
        for k in range(folds):
            valid = parts[k]
            if len(valid) == 0:
                continue
            train = np.concatenate([parts[j] for j in range(folds) if j != k])
            accs.append(float((np.asarray(fit_predict(train, valid, C)) == labels[valid]).mean()))
            weights.append(len(valid))
        means[C] = float(np.average(accs, weights=weights))
    best = max(grid, key=lambda C: (means[C], -C))
    return best, means


def probe_arm(train_x, train_y, test_x, num_classes: int, grid=PROBE_GRID, seed: int = 0, groups=None) -> dict:
    """A linear probe on features: standardised on the labelled sentences, C chosen by cross-validation on
    them (folds by `groups`, the sentences' files, when given), refitted on all of them, applied to the test
    features. {"C", "cv", "predicted"}."""
    found = chosen_probe(train_x, train_y, num_classes, grid, seed, groups)
    return {"C": found["C"], "cv": found["cv"], "predicted": found["predict"](test_x)}


def chosen_probe(train_x, train_y, num_classes: int, grid=PROBE_GRID, seed: int = 0, groups=None) -> dict:
    """`probe_arm` without a test set: {"C", "cv", "predict"}, where `predict(features)` standardises any
    features with the labelled sentences' shift and scale and returns the refitted probe's labels (one
    classifier for several test sets: notebook 06 applies an English one to Portuguese)."""

    def fit_predict(train, valid, C):
        x, v = standardize(train_x[train], train_x[valid])
        return fit_probe(x, train_y[train], num_classes, C).predict(v)

    C, cv = choose_C(fit_predict, train_y, grid, seed=seed, groups=groups)
    probe = fit_probe(standardize(train_x)[0], train_y, num_classes, C)
    return {"C": C, "cv": cv, "predict": lambda features: probe.predict(standardize(train_x, features)[1])}


def tfidf_pipeline(C: float = 1.0):
    """Bag of words: TF-IDF of words and word pairs (sublinear tf, fitted on the labelled sentences) and
    scikit-learn's logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=C, solver="newton-cg", max_iter=1_000),  # the same objective; lbfgs was 5x slower here
    )


def tfidf_arm(train_texts, train_y, test_texts, grid=TFIDF_GRID, seed: int = 0, groups=None) -> dict:
    """TF-IDF + logistic regression, C chosen by cross-validation on the labelled sentences as the probe's
    (folds by `groups` when given). {"C", "cv", "predicted"}."""
    texts = np.asarray(list(train_texts), dtype=object)

    def fit_predict(train, valid, C):
        return tfidf_pipeline(C).fit(texts[train], train_y[train]).predict(texts[valid])

    C, cv = choose_C(fit_predict, train_y, grid, seed=seed, groups=groups)
    return {"C": C, "cv": cv, "predicted": tfidf_pipeline(C).fit(texts, train_y).predict(list(test_texts))}


def majority_arm(train_y, test_size: int) -> dict:
    """Always the commonest class of the labelled sentences."""
    return {"predicted": np.full(test_size, np.bincount(np.asarray(train_y)).argmax())}


# --------------------------------------------------------------------------- fine-tuning the whole encoder


def sequence_classifier(folder_or_model, num_labels: int, seed: int = 0):
    """`AutoModelForSequenceClassification` with `num_labels` classes on an encoder: a folder saved in
    transformers format (brown-small, notebook 04's export) or a transformers model (its weights are copied
    through a temporary folder, so the control's random body goes the same way). The classification head is
    new, drawn from `seed` (global random state untouched)."""
    import tempfile

    from transformers import AutoModelForSequenceClassification

    def load(path):
        with torch.random.fork_rng(devices=[]), quiet.transformers_quiet():
            torch.manual_seed(seed)
            return AutoModelForSequenceClassification.from_pretrained(
                str(path), num_labels=num_labels, local_files_only=True
            )

    if isinstance(folder_or_model, torch.nn.Module):
        with tempfile.TemporaryDirectory() as tmp:
            folder_or_model.save_pretrained(tmp)
            return load(tmp)
    return load(folder_or_model)


@torch.inference_mode()
def classify(model, tokenizer, texts, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """The class a sequence classifier gives each text (in order)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted = np.empty(len(texts), dtype=np.int64)
    for chunk, encoding in _batches(list(texts), batch_size, tokenizer, _fitting_length(model, max_length)):
        logits = model(**{k: v.to(device) for k, v in encoding.items() if k in ("input_ids", "attention_mask")}).logits
        predicted[chunk] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return predicted


def fine_tune(
    model,
    tokenizer,
    texts,
    labels,
    *,
    steps: int,
    lr: float,
    batch_size: int = 16,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train every weight of a sequence classifier on (texts, labels) for `steps` updates: AdamW, linear warmup
    over the first `warmup` share of the updates then linear decay (notebook 04's `lr_factor`), gradient
    clipping at 1, batches drawn by reshuffling the labelled sentences every epoch (from `seed`). Returns the
    training loss of every update. The same loop as notebook 04's, with a classification loss: a plain loop
    rather than `Trainer` because it is twenty lines, exactly seeded, and has no evaluation or saving to turn
    off for runs of a few hundred updates."""
    from .training import lr_factor

    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(texts) != len(labels) or len(texts) == 0:
        raise ValueError(f"need as many labels as texts (and at least one); got {len(texts)} and {len(labels)}")
    device = next(model.parameters()).device
    length = _fitting_length(model, max_length)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup_steps = int(warmup * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, steps))
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in tqdm(range(steps), disable=not progress, leave=False):
        if len(order) < batch_size:
            order += torch.randperm(len(texts), generator=generator).tolist()
        chunk, order = order[:batch_size], order[batch_size:]
        encoding = tokenizer(
            [texts[i] for i in chunk], padding=True, truncation=True, max_length=length, return_tensors="pt"
        )
        logits = model(
            input_ids=encoding["input_ids"].to(device), attention_mask=encoding["attention_mask"].to(device)
        ).logits
        loss = F.cross_entropy(logits, labels[chunk].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --------------------------------------------------------------------------- the learning curve


@dataclass
class Curve:
    """Per-draw results: rows of {"arm", "task", "labels", "draw", "accuracy", "macro_f1", ...}."""

    rows: list[dict] = field(default_factory=list)

    def add(self, arm: str, task: str, n: int, draw_seed: int, result: dict, gold, num_classes: int, **extra):
        row = {"arm": arm, "task": task, "labels": int(n), "draw": int(draw_seed)}
        row.update(scores(result["predicted"], gold, num_classes))
        row.update({k: result[k] for k in ("C",) if k in result})
        row.update(extra)
        self.rows.append(row)
        return row

    def summary(self, metric: str = "accuracy") -> dict:
        """{(arm, task, labels): (mean, sample std over draws, draws)}."""
        groups: dict = {}
        for r in self.rows:
            groups.setdefault((r["arm"], r["task"], r["labels"]), []).append(r[metric])
        return {
            key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
            for key, v in groups.items()
        }


def probe_curve(
    features: dict[str, tuple[torch.Tensor, torch.Tensor]],
    pool: LabelledSplit,
    test: LabelledSplit,
    sizes,
    draws: int,
    tasks=("genre", "informative"),
    curve: Curve | None = None,
    progress: bool = True,
) -> Curve:
    """For every label count in `sizes` and every draw (seeds 0..draws-1; a size equal to the pool is drawn
    once: every draw would be the same set): majority, TF-IDF + logistic regression, and a probe on each
    feature set of `features` ({arm: (pool features, test features)}), for every task. Timings in seconds go
    into each row ("seconds")."""
    curve = curve or Curve()
    jobs = [(n, d) for n in sizes for d in range(draws if n < len(pool) else 1)]
    for n, d in tqdm(jobs, disable=not progress, desc="label draws"):
        chosen = draw(len(pool), n, d)
        files = [pool.files[i] for i in chosen]  # the cross-validation folds never split a file
        for task in tasks:
            k = len(TASKS[task])
            y, gold = pool.labels(task)[chosen], test.labels(task)
            curve.add("majority", task, n, d, majority_arm(y, len(test)), gold, k)
            t0 = time.perf_counter()
            result = tfidf_arm([pool.texts[i] for i in chosen], y, test.texts, seed=d, groups=files)
            curve.add("tf-idf", task, n, d, result, gold, k, seconds=time.perf_counter() - t0)
            for arm, (pool_x, test_x) in features.items():
                t0 = time.perf_counter()
                result = probe_arm(pool_x[chosen], y, test_x, k, seed=d, groups=files)
                curve.add(arm, task, n, d, result, gold, k, seconds=time.perf_counter() - t0)
    return curve


# --------------------------------------------------------------------------- why: the embedding space


def nearest_words(embeddings: torch.Tensor, tokenizer, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The k tokens whose embedding rows are closest (cosine) to `word`'s, with their similarity. `word` must
    be one token of the vocabulary (with its leading space, as it is inside a sentence); a ValueError says
    how it splits otherwise."""
    ids = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(f"{word!r} is {len(ids)} tokens {pieces}, not one: pick a word in the vocabulary")
    weight = F.normalize(embeddings.detach().float(), dim=-1)
    similarity = weight @ weight[ids[0]]
    similarity[ids[0]] = -2.0  # not the word itself
    special = set(tokenizer.all_special_ids)
    best = [i for i in similarity.argsort(descending=True).tolist() if i not in special][:k]
    return [(tokenizer.decode([i]).strip(), float(similarity[i])) for i in best]


def choose_lr(make_model, tokenizer, texts, labels, dev: LabelledSplit, lrs, task: str = "genre", **kwargs) -> tuple:
    """The fine-tuning learning rate of `lrs` with the best accuracy on the dev files (held-out training files,
    never the test files), each trained from `make_model()` on (texts, labels); (best, {lr: dev accuracy})."""
    k = len(TASKS[task])
    accuracy = {}
    for lr in lrs:
        model = make_model()
        fine_tune(model, tokenizer, texts, labels, lr=lr, **kwargs)
        accuracy[lr] = scores(classify(model, tokenizer, dev.texts), dev.labels(task), k)["accuracy"]
    best = max(lrs, key=lambda lr: (accuracy[lr], -lr))
    return best, accuracy


def finetune_updates(n: int, steps: int, epochs: float = 0.0, batch_size: int = 16) -> int:
    """Updates of a fine-tuning run on n labels: `steps`, or `epochs` passes over the labels if that is more
    (a fixed number of updates would leave a run on many labels short of one pass)."""
    return max(int(steps), math.ceil(epochs * n / batch_size))


def fine_tune_curve(
    bodies: dict,
    tokenizer,
    pool: LabelledSplit,
    test: LabelledSplit,
    sizes,
    draws: int,
    lrs: dict,
    task: str = "genre",
    curve: Curve | None = None,
    progress: bool = True,
    *,
    steps: int,
    epochs: float = 0.0,
    batch_size: int = 16,
    **kwargs,
) -> Curve:
    """Fine-tune every body of `bodies` ({arm: make_model}, each call a fresh sequence classifier) on every
    label draw (seeds 0..draws-1, the same sentences as `probe_curve`'s), at the learning rate `lrs[arm]`;
    score on the test files. A run on n labels takes `finetune_updates(n, steps, epochs, batch_size)` updates;
    kwargs go to `fine_tune`."""
    curve = curve or Curve()
    k = len(TASKS[task])
    jobs = [(n, d, arm) for n in sizes for d in range(draws if n < len(pool) else 1) for arm in bodies]
    for n, d, arm in tqdm(jobs, disable=not progress, desc="fine-tuning runs"):
        chosen = draw(len(pool), n, d)
        model = bodies[arm]()
        t0 = time.perf_counter()
        updates = finetune_updates(n, steps, epochs, batch_size)
        losses = fine_tune(model, tokenizer, [pool.texts[i] for i in chosen], pool.labels(task)[chosen], lr=lrs[arm],
                           seed=d, steps=updates, batch_size=batch_size, **kwargs)  # fmt: skip
        result = {"predicted": classify(model, tokenizer, test.texts)}
        curve.add(arm, task, n, d, result, test.labels(task), k, lr=lrs[arm], updates=updates,
                  final_loss=float(np.mean(losses[-10:])), seconds=time.perf_counter() - t0)  # fmt: skip
    return curve


def table(curve: Curve, task: str = "genre", metric: str = "accuracy") -> str:
    """The learning curve as text: one row per arm, one column per label count, mean ± standard deviation over
    the draws (in points)."""
    summary = curve.summary(metric)
    sizes = sorted({n for a, t, n in summary if t == task})
    arms = list(dict.fromkeys(a for a, t, n in summary if t == task))
    lines = [f"{task}, {metric} (%), mean ± sd over draws", f"{'labels':>22}" + "".join(f"{n:>13,}" for n in sizes)]
    for arm in arms:
        cells = []
        for n in sizes:
            if (arm, task, n) in summary:
                mean, sd, k = summary[(arm, task, n)]
                cells.append(f"{100 * mean:7.1f} ± {100 * sd:3.1f}" if k > 1 else f"{100 * mean:7.1f}      ")
            else:
                cells.append(f"{'':>13}")
        lines.append(f"{arm:>22}" + "".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


@dataclass
class Experiment:
    """Everything notebook 08's experiment uses, built by `experiment(profile)`."""

    pool: LabelledSplit
    test: LabelledSplit
    dev: LabelledSplit
    tokenizer: object  # brown-small's
    model: object  # brown-small (RoFormerForMaskedLM)
    random_body: object
    features: dict  # {arm: (pool features, test features)}
    folder: object  # brown-small's folder
    lrs: dict = field(default_factory=dict)
    lr_choice: dict = field(default_factory=dict)

    @property
    def bodies(self) -> dict:
        return {
            "fine-tuned brown-small": lambda: sequence_classifier(self.folder, len(GENRES)),
            "fine-tuned random body": lambda: sequence_classifier(self.random_body, len(GENRES)),
        }

    def choose_lrs(self, profile, task: str = "genre") -> dict:
        """Each body's fine-tuning learning rate, chosen on the dev files after training on the first draw of
        the smallest fine-tuning label count."""
        n = min(profile.finetune_sizes)
        chosen = draw(len(self.pool), n, 0)
        texts, labels = [self.pool.texts[i] for i in chosen], self.pool.labels(task)[chosen]
        for arm, make in self.bodies.items():
            self.lrs[arm], self.lr_choice[arm] = choose_lr(
                make, self.tokenizer, texts, labels, self.dev, profile.finetune_lrs, task,
                steps=finetune_updates(n, profile.finetune_steps, profile.finetune_epochs),
            )  # fmt: skip
        return self.lrs

    def results(self, curve: Curve) -> dict:
        return {
            "pool": len(self.pool),
            "test": len(self.test),
            "dev": len(self.dev),
            "arms": list(dict.fromkeys(r["arm"] for r in curve.rows)),
            "lrs": self.lrs,
            "lr_choice": {arm: {str(k): v for k, v in c.items()} for arm, c in self.lr_choice.items()},
            "rows": curve.rows,
        }


def experiment(profile, nb04=None, progress: bool = True) -> Experiment:
    """The splits cut to the profile's sizes (`task_pool` and `task_test` sentences drawn with fixed seeds,
    `finetune_dev` dev sentences), brown-small, a random body of its shape, and the probe features:
    brown-small's last layer, the random body's, brown-small's input embeddings, and notebook 04's model if
    `nb04` names its exported folder."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from .paths import course_path

    splits = genre_splits()
    pool, test, dev = splits["train"], splits["test"], splits["dev"]
    if profile.task_pool is not None:
        pool = pool.subset(np.sort(draw(len(pool), profile.task_pool, 1234)))
    if profile.task_test is not None:
        test = test.subset(np.sort(draw(len(test), profile.task_test, 4321)))
    dev = dev.subset(np.sort(draw(len(dev), profile.finetune_dev, 5678)))
    folder = course_path("models", "brown-small")
    with quiet.transformers_quiet():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True).eval()
    random_body = random_like(model, seed=0)

    def both(m, tok, layer="last"):
        return tuple(sentence_features(m, tok, s.texts, layer=layer, progress=progress) for s in (pool, test))

    features = {
        "probe: brown-small": both(model, tokenizer),
        "probe: random body": both(random_body, tokenizer),
        "probe: brown-small input embeddings": both(model, tokenizer, "embeddings"),
    }
    if nb04 is not None:
        with quiet.transformers_quiet():
            own_tokenizer = AutoTokenizer.from_pretrained(str(nb04), local_files_only=True)
            own = AutoModelForMaskedLM.from_pretrained(str(nb04), local_files_only=True).eval()
        features["probe: notebook 04's model"] = both(own, own_tokenizer)
    return Experiment(pool, test, dev, tokenizer, model, random_body, features, folder)


def compare(curve: Curve, arm: str, other: str, task: str, n: int, metric: str = "accuracy") -> dict:
    """`arm` against `other` at n labels, draw by draw (both saw the same labelled sentences in each draw):
    {"difference": mean of the paired differences, "low"/"high": their smallest and largest, "spread": the
    larger of the two arms' standard deviations over draws, "draws", "word"}. The word is "beats" when every
    draw's difference is positive and the mean difference exceeds the spread, "loses to" for the mirror
    image, and "ties" otherwise (one draw: never more than "ties")."""
    values = {}
    for r in curve.rows:
        if r["task"] == task and r["labels"] == n and r["arm"] in (arm, other):
            values.setdefault(r["arm"], {})[r["draw"]] = r[metric]
    if arm not in values or other not in values:
        raise KeyError(f"no {task!r} rows at {n} labels for {arm!r} and {other!r}")
    shared = sorted(set(values[arm]) & set(values[other]))
    diffs = np.array([values[arm][d] - values[other][d] for d in shared])
    sds = [np.std(list(values[a].values()), ddof=1) if len(values[a]) > 1 else 0.0 for a in (arm, other)]
    spread = float(max(sds))
    mean = float(diffs.mean())
    word = "ties"
    if len(shared) > 1 and (diffs > 0).all() and mean > spread:
        word = "beats"
    elif len(shared) > 1 and (diffs < 0).all() and -mean > spread:
        word = "loses to"
    return {
        "difference": mean,
        "low": float(diffs.min()),
        "high": float(diffs.max()),
        "spread": spread,
        "draws": len(shared),
        "word": word,
    }
