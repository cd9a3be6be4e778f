"""`python -m course_lib.train`: the pretraining command line under its documented name (also what
`deepspeed --module course_lib.train` and `torchrun -m course_lib.train` start). The code is in
`course_lib.cli.pretrain`; this file is only the entry point."""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while torch and transformers are still loading: one line, as during a run
        from course_lib.cli.pretrain import main
    except KeyboardInterrupt:
        print("stopped before training started; nothing was saved", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(main())
else:
    from course_lib.cli.pretrain import main  # noqa: F401  (course_lib.train.main, as before)
