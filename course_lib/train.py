"""`python -m course_lib.train`: the pretraining command line under its documented name (also what
`deepspeed --module course_lib.train` and `torchrun -m course_lib.train` start). The code is in
`course_lib.cli.pretrain`; this file is only the entry point."""

from course_lib.cli.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main())
