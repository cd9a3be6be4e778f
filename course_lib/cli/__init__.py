"""The command lines: `python -m course_lib.train` (pretraining, `pretrain`), `python -m course_lib.multilingual`
(`multilingual`) and `make demo` (`demo`). They share one config schema (`schema`) and one way of
reporting a user's mistake (`common`). Nothing in the taught modules imports this package."""
