"""What pretraining buys (notebook 08's experiment, without the notebook): the genre task's learning curve.

    python benchmarks/downstream.py --profile cpu --out /tmp/downstream_cpu.json
    python benchmarks/downstream.py --profile cpu --nb04 runs/04/main.<...>/hf     # with notebook 04's model

For every label count of the profile (`task_sizes`) and every draw (`task_draws`) it scores, on the held-out
Brown files (`downstream.genre_splits()["test"]`), for both tasks (15 genres; informative vs imaginative):
the majority class, TF-IDF + logistic regression, and a linear probe on mean-pooled features of brown-small's
last layer, of a random body of the same shape (`downstream.random_like`), of brown-small's input embeddings
alone, and of notebook 04's model (`--nb04`, an exported folder); then fine-tunes brown-small and the random
body (`AutoModelForSequenceClassification`) on the 15-genre task (`finetune_sizes`, `finetune_draws`), the
learning rate of each chosen on the dev files. Every draw's accuracy and macro-F1 go to --out.

The notebook runs the same functions with the same profile and seeds and writes the same file into its work
folder; benchmarks/results/downstream_cpu.json is the stored notebook run's (its "source" says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--nb04", type=Path, help="notebook 04's exported model (a folder with config.json)")
    parser.add_argument("--no-finetune", action="store_true", help="probes and TF-IDF only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ["COURSE_PROFILE"] = args.profile

    import torch

    from course_lib import downstream
    from course_lib.profiles import get_profile

    P = get_profile()
    started = time.perf_counter()
    setup = downstream.experiment(P, nb04=args.nb04)
    curve = downstream.probe_curve(setup.features, setup.pool, setup.test, P.task_sizes, P.task_draws)
    print(downstream.table(curve, "genre"))
    if not args.no_finetune:
        setup.choose_lrs(P)
        downstream.fine_tune_curve(
            setup.bodies, setup.tokenizer, setup.pool, setup.test, P.finetune_sizes, P.finetune_draws, setup.lrs,
            curve=curve, steps=P.finetune_steps, epochs=P.finetune_epochs,
        )  # fmt: skip
        print(downstream.table(curve, "genre"))
    results = setup.results(curve)
    results["source"] = "benchmarks/downstream.py"
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
