"""Notebook 04: the baselines a masked language model must beat, from counts over the training tokens.

A loss means nothing alone. Two predictors that need no training tell what it is worth, and both are
scored on the very same fixed eval masks as the model:

* **no context** - it sees only the token at the position it predicts. Where that token is `<mask>`
  (80% of the predicted positions) it answers the unigram distribution: how often each token occurs in
  the training text. Where the 80/10/10 rule left a visible token t (the original, 10%, or one drawn at
  random, 10%), Bayes' rule gives P(original = x | t) proportional to
  u(x) * (keep * [x == t] + random / R), R the number of tokens random replacement draws from.
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

Bigram counts are kept as a sorted list of (left, right) pairs, not a V x V table, so a 50,000-token
vocabulary costs no more memory than the training text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masking import IGNORE_INDEX


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
    def score(self, batches, chunk: int = 512) -> dict:
        """Loss (mean cross-entropy, nats) and accuracy of both predictors over the labelled positions of
        padded, already-masked batches (`training.eval_batches`), each labelled token counting once."""
        sums = {"no_context": [0.0, 0], "neighbour": [0.0, 0]}
        count = 0
        for batch in batches:
            ids, labels = batch["input_ids"].long(), batch["labels"].long()
            rows, cols = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
            seq = ids.shape[1]
            left = torch.where(cols > 0, ids[rows, (cols - 1).clamp(min=0)], torch.full_like(cols, -1))
            right = torch.where(cols + 1 < seq, ids[rows, (cols + 1).clamp(max=seq - 1)], torch.full_like(cols, -1))
            visible, targets = ids[rows, cols], labels[rows, cols]
            for start in range(0, len(targets), chunk):
                part = slice(start, start + chunk)
                for name, probs in (
                    ("no_context", self.no_context_probs(visible[part])),
                    ("neighbour", self.neighbour_probs(left[part], visible[part], right[part])),
                ):
                    p = probs.gather(1, targets[part].unsqueeze(1)).squeeze(1)
                    sums[name][0] += float(-torch.log(p.clamp_min(1e-12)).sum())
                    sums[name][1] += int((probs.argmax(1) == targets[part]).sum())
            count += len(targets)
        if count == 0:
            raise ValueError("the eval batches have no masked token (labels are all -100)")
        return {
            "no_context_loss": sums["no_context"][0] / count,
            "no_context_accuracy": sums["no_context"][1] / count,
            "neighbour_loss": sums["neighbour"][0] / count,
            "neighbour_accuracy": sums["neighbour"][1] / count,
            "tokens": count,
        }

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
