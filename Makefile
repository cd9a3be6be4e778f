# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install the course, run the end-to-end demo on the shipped data
#   make test   create .venv if missing, install, run the whole test suite (COURSE_PROFILE=ci, two pytest workers;
#               files in the order conftest.py gives them, long ones first: --no-loadscope-reorder)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# wheels for the Colab simulation (tests/test_colab.py), which installs from them offline
COLAB_WHEELS := $(VENV)/colab-wheels

.PHONY: demo test lab notebooks install

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt tests/colab/image.txt tests/colab/extras.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# bubblewrap: the grader runs each submission in it (course_admin/sandbox.py), else only as a plain process
	command -v bwrap >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)); } || echo "note: bubblewrap not installed; the grader will use its process-level fallback"
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull GBs of CUDA packages on a CPU machine.
	# (Not --no-compile: with PYTHONDONTWRITEBYTECODE=1, as on the CI machine, every process would then
	# compile torch and transformers from source at each import; the suite took longer than install saved.)
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,lab,deepspeed,transfer]"
	$(PY) -m pip wheel --quiet -w $(COLAB_WHEELS) -r tests/colab/image.txt -r tests/colab/extras.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m course_lib.cli.demo

test: $(STAMP)
	COURSE_PROFILE=$${COURSE_PROFILE:-ci} $(PY) -m pytest -n $${COURSE_TEST_WORKERS:-2} --dist loadfile --no-loadscope-reorder

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

notebooks: $(STAMP)
	$(PY) -m course_admin.notebooks build
