"""The course's end-to-end demo on the shipped data: `make demo`, or `python -m course_lib.demo`.

So far (notebook 01): train the course's byte-level BPE tokenizer on the shipped English sentences,
save it in Hugging Face format, load it back through `AutoTokenizer`, and show how it splits
held-out sentences it has never seen.
"""

from __future__ import annotations

import argparse
import time

from . import data, tokenization
from .profiles import PROFILE_NAMES, get_profile, work_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=PROFILE_NAMES, help="sizes to use (default: COURSE_PROFILE, else cpu/gpu)")
    parser.add_argument("--sentences", type=int, default=6, help="held-out sentences to show")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)

    train = data.english_sentences("train", limit=profile.tokenizer_sentences)
    heldout = data.english_sentences("valid")
    print(f"[1/3] training a byte-level BPE tokenizer (vocab {profile.vocab_size}) on {len(train):,} "
          f"English sentences (Brown corpus, profile {profile.name})")
    start = time.perf_counter()
    tokenizer = tokenization.train_tokenizer(train, vocab_size=profile.vocab_size)
    print(f"      trained in {time.perf_counter() - start:.1f} s")

    folder = work_dir("demo", "tokenizer")
    tokenizer.save_pretrained(str(folder))
    tokenizer = tokenization.load_tokenizer(folder)
    print(f"[2/3] saved to {folder} and loaded back with AutoTokenizer ({type(tokenizer).__name__})")

    print("[3/3] held-out sentences, tokenised (Ġ marks a token that starts with a space):")
    for sentence in heldout[: args.sentences]:
        ids = tokenizer(sentence)["input_ids"]
        print(f"\n  {sentence}")
        print(f"  {len(ids)} ids: {' '.join(tokenizer.convert_ids_to_tokens(ids))}")
    print(f"\nfertility on {len(heldout):,} held-out sentences: "
          f"{tokenization.fertility(tokenizer, heldout):.3f} tokens per word")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
