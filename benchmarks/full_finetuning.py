"""Notebook 06's full fine-tuning arm at other learning rates: why it ends worse than embeddings alone.

    python benchmarks/full_finetuning.py     # ~6 minutes on 2 CPU cores; prints its results

Notebook 06's `cpu` setting (source brown-small with its English head made by the notebook's head procedure,
seed 0; the Portuguese tokenizer, new embedding matrix, data, masks and 600 updates of batch 32). The
notebook's full fine-tuning trains every weight at 3e-4; here every weight at 3e-3 (the embedding-only arms'
rate), and 300 updates of embeddings alone at 3e-3 followed by 300 of every weight at 3e-4.
"""

from __future__ import annotations

import copy


def main() -> int:
    from course_lib import data, masking, transfer

    source, tokenizer, _ = transfer.load_source("brown-small")
    english = transfer.encode(data.english_sentences("train"), tokenizer)
    english_eval = transfer.masked_eval_set(data.english_sentences("valid", limit=1000), tokenizer)
    portuguese = data.load_multilingual(split="train", langs=["por"])["por"]
    portuguese_eval = data.load_multilingual(split="eval", langs=["por"])["por"][:1000]
    target = transfer.train_target_tokenizer(portuguese, tokenizer, vocab_size=8000)
    train, eval_data = transfer.encode(portuguese, target), transfer.masked_eval_set(portuguese_eval, target)
    body = copy.deepcopy(source)
    transfer.reset_head(body, 0)
    transfer.train_head(
        body, english, masking.MLMCollator(tokenizer, seed=0), english_eval, steps=300, lr=1e-2, batch_size=32
    )

    def fresh():
        model = copy.deepcopy(body)
        transfer.swap_embeddings(
            model, transfer.new_embedding_matrix(source.get_input_embeddings().weight, tokenizer, target)
        )
        return model

    def run(model, steps, lr, seed):
        return transfer.train_mlm(
            model,
            train,
            masking.MLMCollator(target, seed=seed),
            eval_data,
            steps=steps,
            lr=lr,
            batch_size=32,
            eval_every=150,
        )

    model = fresh()
    for param in model.parameters():
        param.requires_grad_(True)
    history = run(model, 600, 3e-3, 0)
    print("every weight at 3e-3:", [(r["step"], round(r["loss"], 3)) for r in history], flush=True)
    model = fresh()
    transfer.freeze_all_but_embeddings(model)
    first = run(model, 300, 3e-3, 0)
    for param in model.parameters():
        param.requires_grad_(True)
    second = run(model, 300, 3e-4, 1)
    print(
        "embeddings at 3e-3, then every weight at 3e-4:",
        [(r["step"], round(r["loss"], 3)) for r in first] + [(300 + r["step"], round(r["loss"], 3)) for r in second],
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
