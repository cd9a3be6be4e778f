"""The course's end-to-end demo on the shipped data: `make demo`, or `python -m course_lib.cli.demo`.

It runs the command-line trainer on `configs/tiny.yaml` (about a minute of training on a laptop CPU): train a
byte-level BPE tokenizer on the Brown sentences (notebook 01), pack and mask the text (02), build the
encoder with rotary positions (03), train it with the course loop and recipe in an experiment folder under
runs/ (04), then judge it: held-out loss and accuracy next to the no-context baseline and the
neighbour-count model on the same masks, and `pipeline("fill-mask")` on held-out sentences after the
Hugging Face export (all in {experiment}/eval.json). Extra arguments go to the trainer (e.g. `--max_steps 300`).
"""

from __future__ import annotations

import sys

from ..paths import course_path
from . import pretrain


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # a fresh run each time (resume none), so the demo always shows a model it has just trained
    return pretrain.main(["--config", str(course_path("configs", "tiny.yaml")), "--resume", "none", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
