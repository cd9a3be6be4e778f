"""course_lib: the helper library of the course "Pretraining masked language models from scratch".

Layers, each importing only those before it (tests/test_layers.py checks it; docs/contributing.md):

* support: `paths`, `seeding`, `config`, `quiet`, `device`, `profiles`;
* taught, one module per notebook topic: `tokenization` (01), `masking` (02), `model` (03), `checkpoints`,
  `training` and `baselines` (04), `multilingual` (05), `transfer` (06), `distributed` (07), and `data` for all
  of them;
* `checks` (the exercise checkers and their registry) and `cli` (the command lines), side by side.

The instructor tools (notebook builder, grader) are in the separate package `course_admin`.
"""

__version__ = "0.1.0"
