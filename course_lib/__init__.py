"""course_lib: the helper library of the course "Pretraining masked language models from scratch".

One flat module per notebook topic; every function here is taught in a notebook.
"""

__version__ = "0.1.0"
