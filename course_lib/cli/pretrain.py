"""The command-line trainer: `python -m course_lib.train --config configs/tiny.yaml [--key value ...]`.

It runs the whole pipeline of notebooks 01-04 on the shipped corpus (or on your own text files):
train (or load) a tokenizer, tokenise and pack the texts, build the model, train it with
`course_lib.training.train` in an experiment folder, evaluate on fixed masks, export it in Hugging
Face format (`{experiment}/hf/`), and print fill-mask predictions for a few held-out sentences.

With `--deepspeed configs/ds_zero2.json` it trains with DeepSpeed (notebook 07): alone on a CPU or a GPU,
or under a launcher, one process per GPU, on one machine or several:

    deepspeed --num_gpus 8 --module course_lib.train --config configs/base.yaml --deepspeed configs/ds_zero2.json
    torchrun --nproc_per_node 8 -m course_lib.train --config configs/base.yaml     # DistributedDataParallel

A config is a YAML file with four sections (see configs/ and `course_lib.cli.schema`):

    run:   {name, output_dir, resume, device, fill_mask, deepspeed}
           # resume: auto continues the newest run of this name if it has a checkpoint and the same settings;
           # none starts afresh; or a checkpoint file / experiment folder
    data:  {corpus, train_files, eval_files, max_train_texts, max_eval_texts, tokenizer, vocab_size, max_length,
            mlm_probability}
    model: {hidden_size, num_layers, num_heads, intermediate_size, dropout, attention_dropout, pre_norm, masked_only,
            position, init_std, layer_norm_eps}
    train: {max_steps, batch_size, grad_accum, lr, warmup_steps, schedule, precision, seed, ...}

Any key can be overridden on the command line, by its full name (`--train.lr 1e-3`) or, when the name
is unique, by itself (`--max_steps 100`, `--seed 1`). Unknown keys and bad values stop the run with one
`error:` line naming them (exit status 2), before anything is trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .. import data, distributed, masking, quiet, tokenization, training
from .. import model as model_lib
from ..baselines import NgramCounts
from ..config import ConfigError
from ..seeding import set_seed
from .common import command_main, device_for, experiment_folder, precision_for, stop_message
from .schema import PretrainConfig, TextData, load_pretrain

load_config = load_pretrain  # the name notebook 04 and earlier scripts use

# --------------------------------------------------------------------------- the pipeline


def corpus_texts(config: TextData, split: str) -> list[str]:
    """The training ("train") or held-out ("eval") texts the data section names."""
    limit = config.max_train_texts if split == "train" else config.max_eval_texts
    if config.corpus == "files":
        if split == "eval" and config.eval_files:
            texts = [line for path in config.eval_files for line in data.read_lines(path)]
        else:
            per_file = {path: data.read_lines(path) for path in config.train_files}
            texts = [line for lines in per_file.values() for line in lines]
            if not config.eval_files:  # no eval files: hold out the last 5% of the training texts
                held = max(1, len(texts) // 20)
                texts = texts[: len(texts) - held] if split == "train" else texts[len(texts) - held :]
                if not texts:
                    raise ConfigError(_too_few_lines(per_file))
    else:
        which = "train" if split == "train" else "valid"
        texts = []
        if "brown" in config.corpus:
            texts += data.english_sentences(which)
        if "sotu" in config.corpus:
            texts += data.english_paragraphs(which)
        if not texts:
            raise ConfigError(f"no {split} texts in data.corpus={config.corpus!r}")
    return texts[:limit] if limit else texts


def _too_few_lines(per_file: dict) -> str:
    """Why a data.train_files corpus left nothing to train on: each file's lines, and the rule that took them."""
    sizes = "; ".join(
        f"{path} holds {len(lines)} line{'s' if len(lines) != 1 else ''} "
        f"({max(len(line) for line in lines):,} characters{' in it' if len(lines) == 1 else ' at most'}"
        f"{', with carriage returns but no newlines' if any(chr(13) in line for line in lines) else ''})"
        for path, lines in per_file.items()
    )
    return (
        f"data.train_files: {sizes}. data.corpus=files reads one text per line and, with no data.eval_files, "
        f"holds the last 5% of the lines (at least one) out for evaluation, which leaves no training text: "
        f"break the text into lines (a sentence or a paragraph each), or give data.eval_files"
    )


def prepare(config: PretrainConfig, tokenizer, texts: dict | None = None) -> tuple:
    """Tokenise and pack the training texts into [n_blocks, max_length]; mask the held-out texts once
    (fixed masks, packed the same way) into padded eval batches. `texts`: {"train", "eval"} already read
    (default: read them with `corpus_texts`)."""
    texts = texts or {split: corpus_texts(config.data, split) for split in ("train", "eval")}
    block = config.data.max_length
    train_ids = tokenizer(texts["train"], verbose=False)["input_ids"]
    tokens = sum(len(ids) for ids in train_ids)
    if tokens < block:  # checked here: pack_sequences would stop with a ValueError about its own arguments
        raise ConfigError(
            f"the training texts hold {tokens} tokens, fewer than one block of "
            f"data.max_length={block}: give more text or a smaller data.max_length"
        )
    blocks = masking.pack_sequences(train_ids, block, pad_token_id=tokenizer.pad_token_id)
    batch = config.train.batch_size * int(os.environ.get("WORLD_SIZE", "1"))  # each update draws a global batch
    if blocks.shape[0] < batch:
        raise ConfigError(
            f"the training texts make {blocks.shape[0]} block{'s' if blocks.shape[0] != 1 else ''} of "
            f"data.max_length={block} tokens, "
            f"fewer than one batch of train.batch_size={config.train.batch_size}"
            f"{' per process' if batch != config.train.batch_size else ''}: give more text, or a "
            f"smaller train.batch_size or data.max_length"
        )
    eval_ids = tokenizer(texts["eval"], verbose=False)["input_ids"]
    eval_blocks = masking.pack_sequences(eval_ids, block, drop_last=False, pad_token_id=tokenizer.pad_token_id)
    # 15% whatever rate training uses, so that runs with different recipes answer the same questions
    masked = masking.fixed_eval_masks(
        list(eval_blocks), tokenizer, seed=0, mlm_probability=masking.EVAL_MLM_PROBABILITY
    )
    if all(label == masking.IGNORE_INDEX for example in masked for label in example["labels"]):
        where = (
            ", ".join(config.data.eval_files or config.data.train_files)
            if config.data.corpus == "files"
            else f"data.corpus={config.data.corpus!r}"
        )
        raise ConfigError(
            f"the held-out texts ({where}) got no masked token ({sum(len(ids) for ids in eval_ids)} "
            f"tokens): give more held-out text, or a larger data.max_eval_texts"
        )
    return blocks, training.eval_batches(masked, config.train.batch_size, tokenizer.pad_token_id)


def launched() -> bool:
    """Whether a launcher (deepspeed, torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def run(config: PretrainConfig, *, progress: bool = True, on_step=None, show=print) -> dict:
    """The whole pipeline for `config`; returns {"folder", "eval", "fill_mask" (accuracy or None), "report"}.

    With run.deepspeed, or under a launcher (several processes), every process runs this: process 0
    makes the experiment folder and the tokenizer, the others wait for them and read them."""
    quiet.no_progress_bars()  # no "Writing model shards" bars between our lines
    device = device_for(config.run, config.train)  # checked (and fp16 against it) before anything is made
    # the precision it trains in there (bf16 on a T4: fp16), recorded in hparams.json with the one asked for
    config, hparams, notice = precision_for(config, device)
    rank, world_size, ds_config = 0, 1, None
    if config.run.deepspeed or launched():
        if config.run.deepspeed:  # read and checked before anything starts (the launcher has set WORLD_SIZE)
            ds_config = distributed.resolve_ds_config(
                distributed.load_ds_config(config.run.deepspeed),
                config.train,
                int(os.environ.get("WORLD_SIZE", "1")),
                f"{config.run.deepspeed}: ",
                device,
            )
        rank, world_size = distributed.init_distributed()
    show = show if rank == 0 else (lambda *args, **kwargs: None)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    texts = {split: corpus_texts(config.data, split) for split in ("train", "eval")}  # read (and checked) first too
    if notice:
        show(notice)
    folder, start = _on_rank0(lambda: experiment_folder(config.run, hparams), world_size)
    show(f"experiment folder: {folder}{' (resuming)' if start else ''}")
    reached = {}  # the last update done, for the line Ctrl-C prints
    with stop_message(folder, reached):  # Ctrl-C: one line saying where the run stopped
        saved = folder / "tokenizer"
        _on_rank0(lambda: _make_tokenizer(config, saved, texts["train"], show), world_size)
        tokenizer = tokenization.load_tokenizer(saved)
        blocks, eval_data = prepare(config, tokenizer, texts)
        show(
            f"data: {blocks.shape[0]:,} packed blocks of {blocks.shape[1]} tokens; "
            f"{sum(int((b['labels'] != -100).sum()) for b in eval_data):,} masked held-out tokens"
        )

        set_seed(config.train.seed)
        encoder_config = config.model.encoder_config(len(tokenizer), config.data.max_length, tokenizer.pad_token_id)
        model = model_lib.EncoderForMaskedLM(encoder_config).to(device)
        (folder / "encoder_config.json").write_text(json.dumps(encoder_config.to_dict(), indent=2) + "\n")
        show(
            f"model: {model.num_parameters():,} parameters on {device}; "
            f"{config.train.max_steps} steps of {config.train.batch_size * config.train.grad_accum} blocks"
        )
        collator = masking.MLMCollator(tokenizer, mlm_probability=config.data.mlm_probability, seed=config.train.seed)
        loop = None
        if ds_config is not None:
            loop = distributed.DeepSpeedLoop(model, config.train, ds_config)
            show(
                f"DeepSpeed: ZeRO stage {loop.stage}, {world_size} process(es), "
                f"{ds_config['train_micro_batch_size_per_gpu']} x {ds_config['gradient_accumulation_steps']} "
                f"x {world_size} = "
                f"{ds_config['train_batch_size']} blocks per update"
            )
        elif world_size > 1:
            loop = distributed.DDPLoop(model, config.train)
            show(
                f"DistributedDataParallel: {world_size} processes, "
                f"{config.train.batch_size} blocks each per micro-batch"
            )

        def step_done(step, row):
            reached["step"] = step
            if on_step is not None:
                on_step(step, row)

        result = training.train(
            model,
            blocks,
            eval_data,
            config.train,
            collator=collator,
            folder=folder,
            resume=start,
            progress=progress,
            on_step=step_done,
            loop=loop,
        )
        if ds_config is not None:  # DeepSpeed's module may be 16-bit and (ZeRO-3) in shards: export full fp32 weights
            weights = loop.full_state_dict()
            model = model_lib.EncoderForMaskedLM(encoder_config)
            model.load_state_dict(weights)
        if rank != 0:
            return {"folder": folder, "eval": result, "fill_mask": None, "report": None}
        report = final_report(config, folder, model, tokenizer, blocks, eval_data, result, show, texts["eval"])
        return {"folder": folder, "eval": result, "fill_mask": report["fill_mask_top1"], "report": report}


def final_report(
    config: PretrainConfig,
    folder: Path,
    model,
    tokenizer,
    blocks,
    eval_data,
    result: dict,
    show=print,
    eval_texts: list[str] | None = None,
) -> dict:
    """The trained model next to the baselines on the same fixed masks, its Hugging Face export and its
    fill-mask answers; everything also written to {folder}/eval.json. `eval_texts`: the held-out texts
    (default: read them again)."""
    counts = NgramCounts.fit(blocks, tokenizer)
    base = counts.score(eval_data)
    report = {
        "steps": config.train.max_steps,
        "eval_loss": result.get("loss"),
        "accuracy": result.get("acc"),
        "eval_tokens": base["tokens"],
        **{k: v for k, v in base.items() if k != "tokens"},
    }
    if result:
        show(
            f"held-out (fixed 15% masks, {base['tokens']:,} tokens): loss {result['loss']:.3f}, "
            f"masked-token accuracy {result['acc']:.1%}"
        )
        show(
            f"  no-context baseline (unigram at <mask>, copy of a visible token): loss {base['no_context_loss']:.3f}, "
            f"accuracy {base['no_context_accuracy']:.1%}"
        )
        show(
            f"  neighbour-count model (left and right neighbour counts): loss {base['neighbour_loss']:.3f}, "
            f"accuracy {base['neighbour_accuracy']:.1%}"
        )
        gain = base["no_context_loss"] - result["loss"]
        show(
            f"  the model is {abs(gain):.2f} nats {'below' if gain > 0 else 'above'} the no-context baseline"
            f"{'' if gain > 0.1 else ': it has not learned to use context yet'}"
        )
        lead = base["neighbour_loss"] - result["loss"]
        show(
            f"  and {abs(lead):.2f} nats {'below' if lead > 0 else 'above'} the neighbour-count model: "
            + (
                "it predicts better than counts of the tokens next to each mask (one run: notebook 04 "
                "measures the spread between seeds)"
                if lead > 0
                else "counts of the tokens next to each mask still predict better; a bigger model trained "
                "longer gets below them (notebook 04, and models/brown-small)"
            )
        )
    keys = (
        "fill_mask_top1",
        "fill_mask_top5",
        "distinct_answers",
        "neighbour_fill_mask_top1",
        "neighbour_fill_mask_top5",
        "most_frequent_answer_top1",
        "fill_mask_examples",
    )
    report.update(dict.fromkeys(keys))
    if config.model.pre_norm:
        show(
            "pre_norm models have no transformers twin: no Hugging Face export and no fill-mask pipeline "
            f"(the weights are in {folder / 'checkpoints'})"
        )
    else:
        hf = model_lib.export_pretrained(model.cpu(), folder / "hf", tokenizer)
        show(f"exported in Hugging Face format: {hf}")
        if config.run.fill_mask:  # 0: no fill-mask evaluation (its keys stay null in eval.json)
            texts = eval_texts if eval_texts is not None else corpus_texts(config.data, "eval")
            report.update(fill_mask_report(hf, texts, config.run.fill_mask, counts, show=show))
    (folder / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _on_rank0(make, world_size: int):
    """make() on process 0; the others wait for it and get its result (a folder, a flag)."""
    if world_size == 1:
        return make()
    import torch.distributed as dist

    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _make_tokenizer(config: PretrainConfig, saved: Path, texts: list[str], show) -> None:
    """The run's tokenizer in saved/: already there (a resumed run), copied from data.tokenizer, or trained."""
    if (saved / "tokenizer.json").is_file():
        return
    if config.data.tokenizer:
        tokenizer = tokenization.load_tokenizer(config.data.tokenizer)
    else:
        show(f"training a byte-level BPE tokenizer, vocab {config.data.vocab_size}, on {len(texts):,} texts")
        tokenizer = tokenization.train_tokenizer(texts, config.data.vocab_size, max_length=config.data.max_length)
    tokenization.save_tokenizer(tokenizer, saved)


def fill_mask_report(folder, texts: list[str], n: int, counts=None, show=print, seed: int = 0) -> dict:
    """`pipeline("fill-mask")` on the exported model in `folder`, judged on up to 200 held-out sentences
    with one whole-word token masked: top-1 and top-5 accuracy and the number of distinct answers, next to
    the neighbour-count model's (`counts`, a `baselines.NgramCounts`) and always answering the commonest
    word. Prints predictions for n of them."""
    pipe = training.fill_mask_pipeline(folder)
    examples = training.fill_mask_examples(texts, pipe.tokenizer, 200, seed=seed)
    scores = training.fill_mask_scores(pipe, examples)
    word, commonest = training.most_frequent_answer(examples)
    report = {
        "fill_mask_top1": scores["top1"],
        "fill_mask_top5": scores["top5"],
        "distinct_answers": scores["distinct_answers"],
        "most_frequent_answer_top1": commonest,
        "fill_mask_examples": len(examples),
    }
    show(
        f"fill-mask on {len(examples)} held-out sentences: top-1 {scores['top1']:.1%}, top-5 {scores['top5']:.1%}, "
        f"{scores['distinct_answers']} distinct answers"
    )
    if counts is not None:
        neighbour = counts.fill_mask(pipe.tokenizer, examples)
        report.update(neighbour_fill_mask_top1=neighbour["top1"], neighbour_fill_mask_top5=neighbour["top5"])
        show(
            f"  neighbour-count model: top-1 {neighbour['top1']:.1%}, top-5 {neighbour['top5']:.1%}, "
            f"{neighbour['distinct_answers']} distinct answers; always {word!r}: top-1 {commonest:.1%}"
        )
    for (masked, answer), top in list(zip(examples, scores["predictions"]))[:n]:
        guesses = ", ".join(f"{p['token_str'].strip()!r} {p['score']:.2f}" for p in top[:3])
        show(f"  {masked}\n      answer {answer!r}; model: {guesses}")
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m course_lib.train`: 0 when the run finished, 2 for a user error (one `error:` line)."""
    return command_main(
        "python -m course_lib.train", __doc__, load_pretrain, run, argv, example="--max_steps 100 --train.lr 1e-3"
    )


if __name__ == "__main__":
    raise SystemExit(main())
