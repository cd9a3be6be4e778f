"""The course's end-to-end demo on the shipped data: `make demo`, or `python -m course_lib.demo`.

It runs the command-line trainer on `configs/tiny.yaml` (about half a minute on a laptop CPU): train a
byte-level BPE tokenizer on the Brown sentences (notebook 01), pack and mask the text (02), build the
encoder (03), train it with the course loop in an experiment folder under runs/ (04), export it in
Hugging Face format and print `pipeline("fill-mask")` predictions for held-out sentences.
The tiny model answers with frequent words: it has not left the unigram plateau (notebook 04).
Extra arguments go to the trainer (e.g. `--max_steps 300`).
"""

from __future__ import annotations

import sys

from . import train
from .notebooks import ROOT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # a fresh run each time (resume none), so the demo always shows a model it has just trained
    return train.main(["--config", str(ROOT / "configs" / "tiny.yaml"), "--resume", "none", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
