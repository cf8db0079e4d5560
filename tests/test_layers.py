"""The package's layers: every import runs down (or across one layer), never up.

The rule, written here and in docs/ARCHITECTURE.md: a module may import modules of its own
layer and of the layers below it. Imports inside functions count as much as those at the top:
a function-level import is no way around the rule. Only imports under ``if TYPE_CHECKING:``
(annotations, never run) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clr_dist"

# Bottom to top. A name is a module of clr_dist or one of its subpackages (whose modules all
# share the subpackage's layer).
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("files", "bounds", "redaction"),  # small utilities: atomic files; a range-test curve; secrets out of records
    ("dist",),
    ("config", "schedules"),
    ("data", "models", "optim", "plan", "weights"),
    ("checks", "checkpoint", "reporting"),
    ("trainer",),
    ("train", "range_test", "compare", "cycle_ends", "cluster", "cli"),  # the commands
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def unit(module: str) -> str:
    """``clr_dist.data.dali`` -> ``data``: the name its layer is listed under."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(tree: ast.Module, importer: str) -> list[tuple[int, str]]:
    """(line, module) for every import of a ``clr_dist`` module in ``tree``, at any depth,
    except under ``if TYPE_CHECKING:``. ``from clr_dist import x`` imports ``clr_dist.x``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names if alias.name.startswith("clr_dist."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{importer}:{node.lineno}: relative import; write clr_dist.… in full")
            if node.module == "clr_dist":
                found.extend((node.lineno, f"clr_dist.{alias.name}") for alias in node.names)
            elif node.module and node.module.startswith("clr_dist."):
                found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def upward_imports(importer: str, source: str) -> list[str]:
    """What ``source`` (the text of module ``importer``) imports from a layer above its own."""
    own = LAYER_OF[unit(importer)]
    problems = []
    for line, module in imported_modules(ast.parse(source), importer):
        target = unit(module)
        if target not in LAYER_OF:
            problems.append(f"{importer}:{line} imports {module}, which has no layer: add it to LAYERS")
        elif LAYER_OF[target] > own:
            problems.append(
                f"{importer}:{line} imports {module}: layer {LAYER_OF[target]} "
                f"({', '.join(LAYERS[LAYER_OF[target]])}) is above its own, {own} "
                f"({', '.join(LAYERS[own])})"
            )
    return problems


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def test_every_module_has_a_layer() -> None:
    missing = sorted({unit(name) for name in package_modules() if name != "clr_dist"} - set(LAYER_OF))
    assert not missing, f"modules with no layer in LAYERS: {missing}"


def test_no_module_imports_one_above_it() -> None:
    problems = [
        problem
        for name, path in package_modules().items()
        if name != "clr_dist"
        for problem in upward_imports(name, path.read_text())
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        # The imports the layering replaced: each was hidden inside a function to dodge a cycle.
        (
            "clr_dist.config",
            "def to_object(cfg):\n    from clr_dist.range_test import read_bounds\n",
            ["clr_dist.config:2 imports clr_dist.range_test: layer 7"],
        ),
        (
            "clr_dist.reporting",
            "class W:\n    def f(self):\n        from clr_dist.range_test import format_suggestion\n",
            ["clr_dist.reporting:3 imports clr_dist.range_test: layer 7"],
        ),
        ("clr_dist.cli", "from clr_dist.train import CONF_DIR\n", []),  # down is fine
        ("clr_dist.range_test", "from clr_dist import trainer, reporting\n", []),
        ("clr_dist.dist", "from clr_dist import config\n", ["clr_dist.dist:1 imports clr_dist.config: layer 3"]),
        ("clr_dist.data.dali", "import clr_dist.trainer\n", ["clr_dist.data.dali:1 imports clr_dist.trainer: layer 6"]),
        (
            "clr_dist.files",
            "from clr_dist.newthing import x\n",
            ["clr_dist.files:1 imports clr_dist.newthing, which has no layer"],
        ),
        # Annotations only: never imported at run time.
        (
            "clr_dist.dist",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clr_dist.trainer import T\n",
            [],
        ),
    ],
)
def test_the_check_flags_upward_imports_at_any_depth(importer: str, source: str, expected: list[str]) -> None:
    problems = upward_imports(importer, source)
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected):
        assert problem.startswith(start), problem
