"""Notebook 04: the baselines a masked language model must beat, from counts over the training tokens.

A loss means nothing alone. Two predictors that need no training tell what it is worth, and both are
scored on the very same fixed eval masks as the model:

* **no context** - it sees only the token at the position it predicts. Where that token is `<mask>`
  (80% of the predicted positions) it answers the unigram distribution: how often each token occurs in
  the training text. Where the 80/10/10 rule left a visible token t (the original, 10%, or one drawn at
  random, 10%), Bayes' rule gives P(original = x | t) proportional to
  u(x) * (keep * [x == t] + random / R), R the number of tokens random replacement draws from
  (`no_context_token_loss`, token by token: exercise 4.4).
  A model whose loss is not below this one has learned token frequencies and "copy what you see",
  nothing that needs context.
* **neighbour counts** - a bigram model of the training tokens, read in both directions:
  P(x | left, right) proportional to P(x | left) * P(right | x), with the counts smoothed towards the
  unigram (`smoothing` pseudo-counts), and the same 80/10/10 rule where the token is visible. Its
  neighbours may be `<s>` and `</s>` (a sentence's first and last words are easier), never `<pad>` or
  `<mask>` (a masked neighbour tells nothing: that side is left out). It uses one token of context on
  each side; a model that beats it uses more than that.

    counts = NgramCounts.fit(blocks, tokenizer)            # training tokens, [n_blocks, block] or lists
    counts.score(eval_data)                                # {"no_context_loss", ..., "neighbour_accuracy"}
    counts.fill_mask(tokenizer, examples)                  # neighbour-count top-1 / top-5 on fill-mask pairs

Where does a model beat them? Split the loss by what the predicted token's two neighbours show: both visible,
one `<mask>`, or both `<mask>`. The counts lose their context as the neighbours get masked; a model that
reads further than one token a side loses less:

    losses = counts.token_losses(eval_data)                # {"no_context": [n], "neighbour": [n]}, per token
    losses["model"] = model_token_losses(model, eval_data)
    loss_by_neighbours(losses, neighbour_status(eval_data, tokenizer.mask_token_id))

Bigram counts are kept as a sorted list of (left, right) pairs, not a V x V table, so a 50,000-token
vocabulary costs no more memory than the training text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .masking import IGNORE_INDEX

NEIGHBOUR_GROUPS = ("both visible", "one masked", "both masked")  # by the number of <mask> neighbours: 0, 1, 2
INPUT_GROUPS = ("at <mask>", "visible")  # what the predicted position itself shows: <mask>, or a token (kept or random)


def _flat_ids(token_ids) -> torch.Tensor:
    """Training token ids as one 1-D LongTensor, with a -1 between sequences given as lists (no pair spans two)."""
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() == 1:
            return token_ids.long()
        if token_ids.dim() == 2:  # packed blocks: a pair never spans two blocks
            rows = token_ids.long()
            return torch.cat([rows, torch.full((rows.shape[0], 1), -1, dtype=torch.long)], 1).flatten()
        raise ValueError(f"token ids must be 1-D or 2-D [n_blocks, block_size], got shape {tuple(token_ids.shape)}")
    rows = [torch.as_tensor(list(r), dtype=torch.long) for r in token_ids]
    if not rows:
        raise ValueError("no training token ids to count")
    sep = torch.full((1,), -1, dtype=torch.long)
    return torch.cat([t for r in rows for t in (r, sep)])


def _predicted(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, shown, right, target) ids of every labelled position of a padded batch, in the order of
    `torch.nonzero(labels != -100)` (row by row); -1 where a neighbour would fall outside the sequence."""
    ids, labels = batch["input_ids"].long(), batch["labels"].long()
    rows, cols = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
    seq = ids.shape[1]
    left = torch.where(cols > 0, ids[rows, (cols - 1).clamp(min=0)], torch.full_like(cols, -1))
    right = torch.where(cols + 1 < seq, ids[rows, (cols + 1).clamp(max=seq - 1)], torch.full_like(cols, -1))
    return left, ids[rows, cols], right, labels[rows, cols]


def neighbour_status(batches, mask_token_id: int) -> torch.LongTensor:
    """How many of its two neighbours (left, right) each predicted token has masked: 0, 1 or 2, one per
    labelled position of the padded, already-masked `batches`, batch after batch in the order of
    `torch.nonzero(labels != -100)` (the order of `NgramCounts.token_losses` and `model_token_losses`).

    A neighbour counts as masked when its input id is `mask_token_id`, whatever the 80/10/10 rule did to
    it; a neighbour that is missing (the predicted token is first or last of the row) or padding counts as
    not masked, like `<s>` and `</s>`: it hides no word, so the question "did masking take my context
    away?" has the answer no. (Where padding follows a short sentence its last token is `</s>`, which is
    never predicted, so padding is rarely a predicted token's neighbour anyway.)"""
    found = []
    for batch in batches:
        left, _, right, _ = _predicted(batch)
        found.append((left == mask_token_id).long() + (right == mask_token_id).long())
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.long)


def input_status(batches, mask_token_id: int) -> torch.LongTensor:
    """What each predicted position itself shows: 0 where its input is `mask_token_id` (80% of them), 1 where
    the 80/10/10 rule left a token there (the original or a random one), in the order of `neighbour_status`.
    `loss_by_neighbours(losses, input_status(...), INPUT_GROUPS)` splits a loss into the part that needs
    context and the part where a copy of the visible token does well (the no-context baseline's Bayes rule)."""
    found = [(shown != mask_token_id).long() for _, shown, _, _ in map(_predicted, batches)]
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.long)


LOSS_CAP = float(-torch.log(torch.tensor(1e-12, dtype=torch.float64)))  # `score` counts a token at most -ln 1e-12


def no_context_token_loss(
    unigram: torch.Tensor,
    visible: torch.Tensor,
    targets: torch.Tensor,
    *,
    mask_token_id: int,
    random_ids,
    keep_prob: float = 0.1,
    random_prob: float = 0.1,
) -> torch.Tensor:
    """The no-context predictor's loss at each predicted position (exercise 4.4 writes it): [n] float64
    cross-entropies, nats, of the original tokens `targets` given only the tokens the positions show, `visible`
    (the mask id, or a token: kept, or drawn at random by the 80/10/10 rule). `NgramCounts.score`'s no-context
    loss is their mean, each capped at LOSS_CAP.

    unigram: [V] probabilities of the training tokens, u (0 on special tokens); random_ids: the ids random
    replacement draws from, R of them; keep_prob, random_prob: the share of predicted positions that keep their
    token, and that show a random one (0.1 and 0.1). Where `<mask>` is shown, P(x) = u(x). Where token t is
    shown, Bayes' rule with the chance that an original x shows t, keep [x = t] + r_t, r_t = random_prob / R if
    t is in random_ids, else 0 (`NgramCounts._visible_rule`, which does it for every x at once):

        P(x | t) = u(x) (keep [x = t] + r_t) / (keep u(t) + r_t sum_y u(y))

    A token that nothing shows at a predicted position (a special one: never chosen, never drawn) has no
    explanation (0 / 0): its loss is inf, as is that of a target of probability 0."""
    u = torch.as_tensor(unigram, dtype=torch.float64).flatten()
    visible, targets = torch.as_tensor(visible).long().flatten(), torch.as_tensor(targets).long().flatten()
    random_ids = torch.as_tensor(random_ids, dtype=torch.long).flatten()
    if visible.shape != targets.shape:
        raise ValueError(f"visible has {visible.numel()} ids, targets {targets.numel()}: one of each per position")
    if random_ids.numel() == 0:
        raise ValueError("random_ids is empty: random replacement needs at least one id to draw")
    random_share = torch.zeros_like(u)
    random_share[random_ids] = random_prob / random_ids.numel()
    shown = visible != mask_token_id
    r = random_share[visible]
    likelihood = torch.where(shown, keep_prob * (targets == visible).double() + r, 1.0)  # P(shows t | original target)
    evidence = torch.where(shown, keep_prob * u[visible] + r * u.sum(), 1.0)  # P(shows t), up to a common factor
    p = torch.where(evidence > 0, u[targets] * likelihood / evidence.clamp_min(1e-300), 0.0)
    return -torch.log(p)


@dataclass
class NgramCounts:
    """Unigram and bigram counts of the training tokens, and the two baselines built on them."""

    vocab_size: int
    unigram: torch.Tensor  # [V] float64 probabilities; 0 on special tokens (never predicted)
    context_unigram: torch.Tensor  # [V] the same over every token that may be a neighbour (<s> and </s> too)
    pair_keys: torch.Tensor  # sorted left * V + right of every distinct adjacent pair of neighbour tokens
    pair_counts: torch.Tensor  # [n_pairs] float64
    col_keys: torch.Tensor  # the same pairs keyed right * V + left, sorted
    col_counts: torch.Tensor
    left_totals: torch.Tensor  # [V] how often each token has a counted right neighbour
    mask_token_id: int
    random_ids: torch.Tensor  # the ids random replacement draws from (the non-special ones)
    keep_prob: float = 0.1
    random_prob: float = 0.1
    smoothing: float = 100.0

    @classmethod
    def fit(
        cls,
        token_ids,
        tokenizer=None,
        *,
        vocab_size: int | None = None,
        special_ids=None,
        mask_token_id=None,
        pad_token_id=None,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        smoothing: float = 100.0,
        background: torch.Tensor | None = None,
    ) -> "NgramCounts":
        """Count the training tokens (packed blocks [n, block], a 1-D stream, or lists of ids).

        The tokenizer gives the vocabulary size, the special ids (never answers), the mask and pad ids
        (never neighbours); or pass them. mask_replace_prob / random_replace_prob: the replacement rule of the
        eval masks (80/10/10).

        background: a [V] distribution to back off to for tokens these counts never saw (notebook 05: one
        language's counts, backed off to the unigram of every language's training text). Without it a token
        absent from the training text has probability 0, which is right for a tokenizer trained on that very
        text and wrong for a language with 39 sentences. With it the unigram is Witten-Bell's interpolation,
        which needs no setting: lambda * counts / N + (1 - lambda) * background, lambda = N / (N + T),
        N the tokens counted and T the distinct tokens among them (the more new types the text kept showing,
        the more weight the back-off gets)."""
        if tokenizer is not None:
            vocab_size = vocab_size or len(tokenizer)
            special_ids = tokenizer.all_special_ids if special_ids is None else special_ids
            mask_token_id = tokenizer.mask_token_id if mask_token_id is None else mask_token_id
            pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        if vocab_size is None or special_ids is None or mask_token_id is None:
            raise ValueError("NgramCounts.fit needs a tokenizer, or vocab_size, special_ids and mask_token_id")
        if not 0 <= mask_replace_prob + random_replace_prob <= 1:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob = {mask_replace_prob + random_replace_prob} must be in [0, 1]"
            )
        if not smoothing > 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing!r}")
        V = int(vocab_size)
        ids = _flat_ids(token_ids)
        if ids.numel() and int(ids.max()) >= V:
            raise ValueError(f"token id {int(ids.max())} is out of range for vocab_size={V}")
        special = torch.zeros(V + 1, dtype=torch.bool)  # index V stands for the -1 separators
        special[torch.as_tensor(list(special_ids), dtype=torch.long)] = True
        special[V] = True
        never_context = torch.zeros(V + 1, dtype=torch.bool)  # padding, <mask> and the separators
        never_context[V] = True
        never_context[int(mask_token_id)] = True
        if pad_token_id is not None:
            never_context[int(pad_token_id)] = True
        ids = torch.where(ids < 0, torch.full_like(ids, V), ids)
        ordinary, context = ~special[ids], ~never_context[ids]
        counts = torch.bincount(ids[ordinary], minlength=V).double()
        if counts.sum() == 0:
            raise ValueError("the training ids hold no ordinary (non-special) token to count")
        unigram = counts / counts.sum()
        if background is not None:
            background = torch.as_tensor(background, dtype=torch.float64).flatten()
            if background.shape != (V,) or bool((background < 0).any()):
                raise ValueError(
                    f"background must hold {V} non-negative numbers (one per token), got {tuple(background.shape)}"
                )
            background = background * ~special[:V]
            if not float(background.sum()) > 0:
                raise ValueError("background gives no probability to any ordinary (non-special) token")
            n, types = float(counts.sum()), float((counts > 0).sum())
            weight = n / (n + types)
            unigram = weight * unigram + (1 - weight) * background / background.sum()
        context_counts = torch.bincount(ids[context], minlength=V).double()
        left, right = ids[:-1], ids[1:]
        both = context[:-1] & context[1:]
        left, right = left[both], right[both]
        keys, pair_counts = torch.unique(left * V + right, return_counts=True)  # sorted
        col_keys, col_counts = torch.unique(right * V + left, return_counts=True)
        random_ids = torch.nonzero(~special[:V]).flatten()
        return cls(
            vocab_size=V,
            unigram=unigram,
            context_unigram=context_counts / context_counts.sum(),
            pair_keys=keys,
            pair_counts=pair_counts.double(),
            col_keys=col_keys,
            col_counts=col_counts.double(),
            left_totals=torch.bincount(left, minlength=V).double(),
            mask_token_id=int(mask_token_id),
            random_ids=random_ids,
            keep_prob=1.0 - mask_replace_prob - random_replace_prob,
            random_prob=random_replace_prob,
            smoothing=float(smoothing),
        )

    # ------------------------------------------------------------------ the two predictors
    def _rows(self, keys: torch.Tensor, counts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Dense [n, V] counts of the pairs whose first key part is `tokens[i]`."""
        V = self.vocab_size
        out = torch.zeros(len(tokens), V, dtype=torch.float64)
        start = torch.searchsorted(keys, tokens * V)
        end = torch.searchsorted(keys, (tokens + 1) * V)
        for i, (a, b) in enumerate(zip(start.tolist(), end.tolist())):
            if b > a:
                out[i, keys[a:b] % V] = counts[a:b]
        return out

    def _visible_rule(self, probs: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Bayes' rule for the 80/10/10 replacement: the prior `probs` [n, V] of the original token, and the
        token each position shows (the mask id, or a visible token: kept, or drawn at random)."""
        shown = visible != self.mask_token_id
        if not bool(shown.any()):
            return probs
        rows = probs[shown]
        random_share = torch.zeros(self.vocab_size, dtype=torch.float64)
        random_share[self.random_ids] = self.random_prob / len(self.random_ids)
        likelihood = random_share[visible[shown]].unsqueeze(1).expand_as(rows).clone()  # P(show t | original x), x != t
        keep = torch.zeros_like(rows)
        keep[torch.arange(len(rows)), visible[shown]] = self.keep_prob
        posterior = rows * (likelihood + keep)
        out = probs.clone()
        out[shown] = posterior / posterior.sum(1, keepdim=True).clamp_min(1e-300)
        return out

    @property
    def replacement_rule(self) -> dict:
        """The 80/10/10 rule of the eval masks, as `no_context_token_loss` takes it: mask_token_id, random_ids,
        keep_prob, random_prob."""
        return {
            "mask_token_id": self.mask_token_id,
            "random_ids": self.random_ids,
            "keep_prob": self.keep_prob,
            "random_prob": self.random_prob,
        }

    def no_context_probs(self, visible: torch.Tensor) -> torch.Tensor:
        """[n, V] probabilities of the original token, from the shown token alone."""
        prior = self.unigram.unsqueeze(0).expand(len(visible), -1)
        return self._visible_rule(prior, visible)

    def neighbour_probs(self, left: torch.Tensor, visible: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """[n, V] probabilities of the original token from its left and right neighbours (-1 for none; a
        neighbour that is never context, `<pad>` or `<mask>`, adds nothing on its side) and the shown token."""
        V, k, u, uc = self.vocab_size, self.smoothing, self.unigram, self.context_unigram
        n = len(visible)
        has_left = (left >= 0) & (uc[left.clamp(0, V - 1)] > 0)
        has_right = (right >= 0) & (uc[right.clamp(0, V - 1)] > 0)
        prior = u.unsqueeze(0).repeat(n, 1)
        if bool(has_left.any()):  # P(x | left), up to a factor that is the same for every x: c(left, x) + k u(x)
            prior[has_left] = self._rows(self.pair_keys, self.pair_counts, left[has_left]) + k * u
        if bool(has_right.any()):  # times P(right | x) = (c(x, right) + k uc(right)) / (c(x) + k)
            r = right[has_right]
            cols = self._rows(self.col_keys, self.col_counts, r)
            prior[has_right] *= (cols + k * uc[r].unsqueeze(1)) / (self.left_totals.unsqueeze(0) + k)
        prior = prior * (u > 0)  # special tokens are never the answer
        prior = prior / prior.sum(1, keepdim=True)
        return self._visible_rule(prior, visible)

    # ------------------------------------------------------------------ scoring on the fixed eval masks
    def _per_token(self, batches, chunk: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Both predictors at every labelled position of `batches`: name -> (cross-entropy [n] float64, nats;
        whether the top answer is right [n] bool), in the order of `neighbour_status`."""
        found = {"no_context": ([], []), "neighbour": ([], [])}
        for batch in batches:
            left, visible, right, targets = _predicted(batch)
            for start in range(0, len(targets), chunk):
                part = slice(start, start + chunk)
                for name, probs in (
                    ("no_context", self.no_context_probs(visible[part])),
                    ("neighbour", self.neighbour_probs(left[part], visible[part], right[part])),
                ):
                    if name == "no_context":  # exercise 4.4's closed form of the same rule, token by token
                        rule = self.replacement_rule
                        loss = no_context_token_loss(self.unigram, visible[part], targets[part], **rule)
                    else:
                        loss = -torch.log(probs.gather(1, targets[part].unsqueeze(1)).squeeze(1))
                    found[name][0].append(loss.clamp(max=LOSS_CAP))
                    found[name][1].append(probs.argmax(1) == targets[part])
        if not any(len(t) for t in found["no_context"][0]):
            raise ValueError("the eval batches have no masked token (labels are all -100)")
        return {name: (torch.cat(losses), torch.cat(right)) for name, (losses, right) in found.items()}

    def token_losses(self, batches, chunk: int = 512) -> dict[str, torch.Tensor]:
        """The loss (cross-entropy, nats) of both predictors at each labelled position of padded,
        already-masked batches: {"no_context": [n], "neighbour": [n]} float64, in the order of
        `neighbour_status`, so that `loss_by_neighbours` can split them. Their means are `score`'s losses."""
        return {name: losses for name, (losses, _) in self._per_token(batches, chunk).items()}

    def score(self, batches, chunk: int = 512) -> dict:
        """Loss (mean cross-entropy, nats) and accuracy of both predictors over the labelled positions of
        padded, already-masked batches (`training.eval_batches`), each labelled token counting once."""
        found = self._per_token(batches, chunk)
        scores = {}
        for name, (losses, right) in found.items():
            scores[f"{name}_loss"] = float(losses.mean())
            scores[f"{name}_accuracy"] = float(right.double().mean())
        return {**scores, "tokens": len(found["neighbour"][0])}

    def fill_mask(self, tokenizer, examples: list[tuple[str, str]], top_k: int = 5) -> dict:
        """The neighbour-count model on fill-mask pairs (`training.fill_mask_examples`): top-1 and top-k
        accuracy of its answer at the `<mask>` of each text, and its answers (one token each)."""
        if not examples:
            raise ValueError("no fill-mask examples to score")
        left, right = [], []
        for text, _ in examples:
            ids = tokenizer(text, verbose=False)["input_ids"]
            if ids.count(tokenizer.mask_token_id) != 1:
                raise ValueError(f"fill-mask text must hold exactly one {tokenizer.mask_token}: {text!r}")
            j = ids.index(tokenizer.mask_token_id)
            left.append(ids[j - 1] if j > 0 else -1)
            right.append(ids[j + 1] if j + 1 < len(ids) else -1)
        visible = torch.full((len(examples),), self.mask_token_id, dtype=torch.long)
        probs = self.neighbour_probs(torch.tensor(left), visible, torch.tensor(right))
        top = probs.topk(top_k, dim=1).indices
        answers = [tokenizer.decode([int(i)]).strip() for i in top[:, 0]]
        top1 = sum(a == answer for a, (_, answer) in zip(answers, examples)) / len(examples)
        topk = sum(
            any(tokenizer.decode([int(i)]).strip() == answer for i in row)
            for row, (_, answer) in zip(top.tolist(), examples)
        ) / len(examples)
        return {"top1": top1, f"top{top_k}": topk, "answers": answers, "distinct_answers": len(set(answers))}


@torch.no_grad()
def model_token_losses(model, batches) -> torch.Tensor:
    """The loss (cross-entropy, nats) of a course model at each labelled position of padded, already-masked
    batches: [n] float64, in the order of `neighbour_status`; its mean is `training.evaluate`'s loss in fp32.

    The model is an argument, not an import: this module stays below `model` and `training`. It runs in
    eval mode (no dropout) on the model's device and is left in the mode it was in."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    found = []
    try:
        for batch in batches:
            batch = {key: value.to(device) for key, value in batch.items()}
            labels = batch["labels"]
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
            where = labels != IGNORE_INDEX
            if logits.dim() == 3:  # every position; a masked-only head returns the labelled rows already
                logits = logits[where]
            found.append(F.cross_entropy(logits.float(), labels[where], reduction="none").double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.float64)


def loss_by_neighbours(
    losses: dict[str, torch.Tensor], status: torch.Tensor, groups=NEIGHBOUR_GROUPS
) -> dict[str, dict]:
    """Mean per-token losses split by `neighbour_status`: one row per group of `NEIGHBOUR_GROUPS` and one for
    "all", each {"tokens": count, name: mean loss for every name of `losses`}; nan for a group with no token.
    Any other split of the same tokens works the same way: a status i names `groups[i]` (`input_status` with
    `INPUT_GROUPS`).

    losses: name -> [n] losses in the order of `status` (`NgramCounts.token_losses`, `model_token_losses`).
    The rows' means weighted by their token counts give the "all" row. A plain dict of plain numbers,
    e.g. `pandas.DataFrame(result).T` prints it as a table."""
    status = torch.as_tensor(status).long()
    for name, values in losses.items():
        if values.shape != status.shape:
            raise ValueError(f"losses[{name!r}] has shape {tuple(values.shape)}, the status {tuple(status.shape)}")
    rows = {}
    for group, where in [*((g, status == i) for i, g in enumerate(groups)), ("all", status >= 0)]:
        count = int(where.sum())
        rows[group] = {"tokens": count}
        for name, values in losses.items():
            rows[group][name] = float(values[where].double().mean()) if count else float("nan")
    return rows
