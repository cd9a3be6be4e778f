"""The command lines: `python -m course_lib.train` (pretraining, `pretrain`), `python -m course_lib.multilingual`
(`multilingual`) and `make demo` (`demo`), which share one config schema (`schema`) and one way of reporting a
user's mistake (`common`); and notebook 07's ZeRO stages in several processes (`zero`, started by
`torchrun --nproc_per_node 2 -m course_lib.cli.zero`). Nothing in the taught modules imports this package."""
