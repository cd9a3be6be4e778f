"""The import rules of course_lib: every arrow points down, and there is no circle.

    support   paths, seeding, config, quiet, device, profiles     import nothing of the course but support
    taught    one module per notebook topic (data ... downstream) import support and each other, never upwards
    checks    course_lib.checks.*  (the exercise checkers)       import taught and support, never the command lines
    cli       course_lib.cli.*, course_lib.train (entry point)   import taught and support, never the checkers
    admin     course_admin.*  (notebook builder, grader)         may import anything in course_lib; course_lib never
                                                                 imports it

Imports inside functions count too. The only exemption is an `if __name__ == "__main__":` block, which
runs a module as a command (`python -m course_lib.multilingual` starts the command line from there).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from course_lib.paths import ROOT

SUPPORT = {
    "course_lib",
    "course_lib.paths",
    "course_lib.seeding",
    "course_lib.config",
    "course_lib.quiet",
    "course_lib.device",
    "course_lib.profiles",
}
TAUGHT = {
    "course_lib.data",
    "course_lib.tokenization",
    "course_lib.masking",
    "course_lib.model",
    "course_lib.baselines",
    "course_lib.training",
    "course_lib.checkpoints",
    "course_lib.multilingual",
    "course_lib.transfer",
    "course_lib.distributed",
    "course_lib.downstream",
}


def layer(module: str) -> str:
    if module in SUPPORT:
        return "support"
    if module in TAUGHT:
        return "taught"
    if module == "course_lib.checks" or module.startswith("course_lib.checks."):
        return "checks"
    if module in ("course_lib.cli", "course_lib.train") or module.startswith("course_lib.cli."):
        return "cli"
    if module.split(".")[0] == "course_admin":
        return "admin"
    raise AssertionError(f"{module}: not in any layer; add it to tests/test_layers.py")


ALLOWED = {
    "support": {"support"},
    "taught": {"support", "taught"},
    "checks": {"support", "taught", "checks"},
    "cli": {"support", "taught", "cli"},
    "admin": {"support", "taught", "checks", "cli", "admin"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def course_imports(path: Path) -> set[str]:
    """The course modules `path` imports (absolute or relative, anywhere but a __main__ block)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if _is_main_guard(node) for n in ast.walk(node)}
    known = {module_name(p) for p in sources()} | {name}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from . import model` imports the module course_lib.model; `from .x import f` imports course_lib.x
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] in ("course_lib", "course_admin")}
    return out - {name}


@functools.cache
def sources() -> tuple[Path, ...]:
    return tuple(sorted(p for package in ("course_lib", "course_admin") for p in (ROOT / package).rglob("*.py")))


@functools.cache
def graph() -> dict[str, set[str]]:
    return {module_name(p): course_imports(p) for p in sources()}


def test_every_module_is_in_a_layer():
    for module in graph():
        layer(module)


@pytest.mark.parametrize("module", sorted(module_name(p) for p in sources()))
def test_imports_point_down(module):
    mine = layer(module)
    wrong = sorted(f"{target} ({layer(target)})" for target in graph()[module] if layer(target) not in ALLOWED[mine])
    assert not wrong, f"{module} ({mine} layer) imports {', '.join(wrong)}"


def test_no_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_the_rules_can_fail(tmp_path):
    """The checker itself: an upward import and a circle are found."""
    assert layer("course_lib.training") == "taught" and "cli" not in ALLOWED["taught"]
    assert "admin" not in ALLOWED["cli"] | ALLOWED["checks"] | ALLOWED["taught"] | ALLOWED["support"]
    fake = ROOT / "course_lib" / "_layers_probe.py"
    try:
        fake.write_text("from .cli import schema\nfrom . import training\n")
        assert course_imports(fake) == {"course_lib.cli.schema", "course_lib.training"}
    finally:
        fake.unlink()
