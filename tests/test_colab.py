"""The Colab simulation: the course as a Colab user gets it, offline.

A fresh virtual environment plays the Colab runtime: the packages of tests/colab/image.txt (transformers
4.57.6, tokenizers 0.22.2, huggingface_hub 0.36: the oldest the course claims to support, not those of
constraints.txt), a `google.colab` module imported at start as Colab's kernel does, and no course. The
repository is a git repository made from this working tree (committed or not), reached by a file:// URL, which
the notebooks' setup cells get from `course_admin.notebooks` exactly as `make notebooks` writes them for a
published URL. pip installs offline, from the wheels `make install` put in .venv/colab-wheels.

Then: a setup cell whose repository is unreachable fails loudly, and run again once it is back, installs the
course; notebooks 01, 04 and 07 (the `ci` profile) pass under nbval from a folder outside the checkout, their
setup cells installing what they need; a model and tokenizer exported by the course's transformers load in
the old one with the same ids and logits.
"""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import torch

from course_admin import notebooks as nbs
from course_lib import data, model, paths, tokenization

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "colab"
WHEELS = Path(os.environ.get("COURSE_COLAB_WHEELS") or paths.ROOT / ".venv" / "colab-wheels")
NOTEBOOKS = ["01_bpe_tokenizer", "04_training_loop", "07_deepspeed_scaling"]


class Runtime:
    """The simulated Colab runtime: its Python, environment and the course's repository URL."""

    def __init__(self, root: Path):
        self.root = root
        self.python = root / "venv" / "bin" / "python"
        self.repo = root / "course.git"
        self.where = nbs.Location(self.repo.as_uri(), "main")
        home = root / "home"
        home.mkdir(exist_ok=True)
        keep = ("LANG", "LC_ALL", "TERM", "TMPDIR", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        path = [p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(paths.ROOT))]
        self.env = {
            **{k: os.environ[k] for k in keep if k in os.environ},
            "PATH": os.pathsep.join([str(self.python.parent), *path]),
            "HOME": str(home),
            "PIP_CONFIG_FILE": os.devnull,  # this machine's pip settings are not Colab's
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(WHEELS),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            # no .pyc files written at install (pip reads a "no-" option's variable inverted: "0" is --no-compile;
            # pip 26.3 here wrote none for tqdm with "0", 31 with "1"): installing image.txt took 52 s of CPU
            # with them, 21 s without; a module is compiled when first imported instead (torch, transformers,
            # datasets and pyplot: 9.5 s once). Nothing a notebook does depends on it.
            "PIP_NO_COMPILE": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "COURSE_OFFLINE": "1",
            "COURSE_PROFILE": "ci",
            "COURSE_WORK_DIR": str(root / "runs"),
            "MPLBACKEND": "Agg",
            "GIT_CONFIG_NOSYSTEM": "1",
        }

    def run(self, *args, cwd=None, timeout=900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.python), *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def snapshot(target: Path) -> None:
    """A git repository at `target` holding this working tree as it is (tracked and untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=paths.ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = paths.ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=course", "-c", "user.email=course@example.org"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *command], cwd=target, check=True, capture_output=True)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    if not any(WHEELS.glob("transformers-4.*.whl")):
        pytest.fail(f"{WHEELS}: no wheels for the Colab simulation; `make install` downloads them")
    root = tmp_path_factory.mktemp("colab")
    snapshot(root / "course.git")
    venv.create(root / "venv", with_pip=True)
    rt = Runtime(root)
    install = rt.run("-m", "pip", "install", "--quiet", "-r", str(HERE / "image.txt"))
    assert install.returncode == 0, install.stderr[-3000:]
    # Colab's kernel has google.colab imported when a notebook starts: the setup cell looks for it there
    site = Path(rt.run("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "colab" / "__init__.py").write_text(
        '"""A stand-in for Colab\'s module (tests/test_colab.py)."""\n'
    )
    (site / "colab_runtime.pth").write_text("import google.colab\n")
    return rt


def versions(rt: Runtime) -> dict:
    code = "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in %r}))"
    done = rt.run("-c", code % ["torch", "transformers", "tokenizers", "huggingface_hub"])
    return json.loads(done.stdout)


def test_the_runtime_is_not_the_development_environment(runtime):
    import transformers

    found = versions(runtime)
    assert found["transformers"].startswith("4."), found
    assert found["transformers"] != transformers.__version__
    assert runtime.run("-c", "import course_lib").returncode != 0, "the runtime must start without the course"


def test_the_setup_cell_fails_loudly_and_a_second_run_installs_the_course(runtime, tmp_path):
    setup = nbs.setup_cell("01", runtime.where)
    away = runtime.root / "course.git-unreachable"
    steps = [
        {"code": "import sys; print('google.colab' in sys.modules)"},
        {"code": setup, "before": [[str(runtime.repo), str(away)]]},  # the network is down
        {"code": setup, "before": [[str(away), str(runtime.repo)]]},  # and back: run the cell again
        {"code": "import course_lib.paths as p; print(p.in_checkout(), (p.CONFIGS / 'tiny.yaml').is_file())"},
    ]
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    done = runtime.run(str(HERE / "kernel_steps.py"), str(tmp_path / "steps.json"), str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    colab, failed, again, installed = json.loads((tmp_path / "report.json").read_text())
    assert colab["stdout"].strip() == "True"
    assert failed["status"] == "error" and failed["ename"] == "RuntimeError", failed
    assert "Installing course-lib @ git+file://" in failed["evalue"] and "run this cell again" in failed["evalue"]
    assert "course.git" in failed["evalue"], "pip's own message (which repository failed) is shown"
    assert again["status"] == "ok", again
    assert installed["status"] == "ok" and installed["stdout"].split() == ["False", "True"], installed


def test_notebooks_pass_from_the_installed_package_outside_the_checkout(runtime, tmp_path):
    folder = tmp_path / "content"  # Colab's working folder
    folder.mkdir()
    for name in NOTEBOOKS:
        nb = nbs.read(paths.ROOT / "solutions" / f"{name}.ipynb")
        nbs.stamp(nb, f"solutions/{name}.ipynb", runtime.where)
        (folder / f"{name}.ipynb").write_text(nbs.dumps(nb))
    sanitize = paths.ROOT / "course_admin" / "nbval_sanitize.cfg"
    done = runtime.run(
        "-m",
        "pytest",
        "-c",
        os.devnull,
        "--rootdir",
        str(folder),
        "-p",
        "no:cacheprovider",
        "-q",
        "--nbval-lax",
        "--nbval-current-env",
        f"--nbval-sanitize-with={sanitize}",
        "--nbval-cell-timeout=300",
        *[f"{name}.ipynb" for name in NOTEBOOKS],
        cwd=folder,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-6000:]
    where = runtime.run("-c", "import course_lib, deepspeed; print(course_lib.__file__)").stdout
    assert str(runtime.root / "venv") in where and str(paths.ROOT) not in where


def test_an_export_loads_in_the_old_transformers_with_the_same_ids_and_logits(runtime, tmp_path):
    tokenizer = tokenization.train_tokenizer(data.english_sentences("train")[:2000], vocab_size=600)
    folders = {}
    for position in ("rotary", "learned"):
        torch.manual_seed(0)
        config = model.EncoderConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            position=position,
        )
        folders[position] = tmp_path / position
        model.export_pretrained(model.EncoderForMaskedLM(config).eval(), folders[position], tokenizer)
    folders["brown-small"] = paths.course_path("models", "brown-small")
    folders = json.dumps({name: str(folder) for name, folder in folders.items()})
    # the same script here (transformers of constraints.txt) and in the runtime (the oldest supported)
    here = subprocess.run(
        [sys.executable, str(HERE / "load_export.py"), folders], capture_output=True, text=True, timeout=600
    )
    there = runtime.run(str(HERE / "load_export.py"), folders)
    assert here.returncode == 0, here.stderr[-3000:]
    assert there.returncode == 0, there.stderr[-3000:]
    expected, found = json.loads(here.stdout), json.loads(there.stdout)
    for name in expected:
        assert found[name]["ids"] == expected[name]["ids"], name
        assert found[name]["argmax"] == expected[name]["argmax"], name
        assert np.abs(np.array(found[name]["logits"]) - np.array(expected[name]["logits"])).max() < 1e-4, name
