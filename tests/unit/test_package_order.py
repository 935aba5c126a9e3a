"""The packages import one way, and no module imports itself through a cycle.

The order (docs/ARCHITECTURE.md "Package order"), bottom first:

    config → schemas → online_models → flink_jobs | serving | producers | infra | archive → pulse (the CLI)

A package may import its own modules and any package below it, never one above it or beside it;
nothing of the product imports ``bench`` or ``tests``. The imports are read from the source with
``ast`` (every ``import`` statement, also those inside functions), so the check sees what runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Level of each product package: an import may only point to a lower level (or inside its own package).
LEVELS: dict[str, int] = {
    "config": 0,
    "schemas": 1,
    "online_models": 2,
    "flink_jobs": 3,
    "serving": 3,
    "producers": 3,
    "infra": 3,
    "archive": 3,
    "pulse": 4,
}
#: Imported by no product package.
OUTSIDE = ("bench", "tests")


@dataclass(frozen=True)
class Import:
    """One import statement: the module that has it, the module it names, where."""

    module: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_files(root: Path) -> Iterator[Path]:
    for package in LEVELS:
        folder = root / package
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(root: Path, path: Path, known: set[str]) -> Iterator[Import]:
    """Every import in ``path`` of a module of ours (``known``) or of ``bench``/``tests``."""
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the module pkg.sub when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            top = target.partition(".")[0]
            if top in LEVELS or top in OUTSIDE:
                yield Import(module, target, path.relative_to(root), node.lineno)


def all_imports(root: Path) -> list[Import]:
    files = list(product_files(root))
    known = {module_name(root, p) for p in files}
    return [imp for path in files for imp in imports_of(root, path, known)]


def order_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        source, target = imp.module.partition(".")[0], imp.target.partition(".")[0]
        if source == target:
            continue
        if target in OUTSIDE:
            problems.append(f"{imp}: the product never imports {target}/")
        elif LEVELS[target] >= LEVELS[source]:
            where = "beside" if LEVELS[target] == LEVELS[source] else "above"
            problems.append(f"{imp}: {target}/ is {where} {source}/ in the package order")
    return problems


def cycles(imports: list[Import]) -> list[list[str]]:
    """Each import cycle between modules, once (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_packages_import_one_way() -> None:
    imports = all_imports(REPO)
    assert len(imports) > 100, "the check found too few imports to be reading the tree"
    problems = order_violations(imports)
    assert not problems, "imports against the package order:\n" + "\n".join(problems)


def test_no_module_imports_itself_through_a_cycle() -> None:
    found = cycles(all_imports(REPO))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"config/__init__.py": "from pulse.app import app\n"}, "pulse/ is above config/"),
        ({"flink_jobs/job.py": "from producers.producer import EventProducer\n"}, "producers/ is beside flink_jobs/"),
        ({"flink_jobs/job.py": "def f():\n    import infra.local.jars\n"}, "infra/ is beside flink_jobs/"),
        ({"serving/app.py": "from bench import pipeline\n"}, "the product never imports bench/"),
        ({"online_models/mf.py": "from flink_jobs import runtime\n"}, "flink_jobs/ is above online_models/"),
    ],
)
def test_a_bad_import_is_found(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = order_violations(all_imports(_tree(tmp_path, files)))
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_cycle_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pulse/__init__.py": "",
            "pulse/cli.py": "from pulse.commands import job\n",
            "pulse/commands/__init__.py": "",
            "pulse/commands/job.py": "def f():\n    from pulse.cli import app\n",
            "serving/app.py": "from . import routes\n",
            "serving/routes.py": "from serving.app import create_app\n",
        },
    )
    assert sorted(cycles(all_imports(root))) == [
        ["pulse.cli", "pulse.commands.job"],
        ["serving.app", "serving.routes"],
    ]


#: Product files and functions allowed past the size limits, with the reason (docs/ARCHITECTURE.md lists them).
SIZE_EXCEPTIONS: dict[str, str] = {}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(root: Path) -> list[str]:
    """Product files over :data:`MAX_FILE_LINES` lines and functions over :data:`MAX_FUNCTION_LINES`."""
    found = []
    for path in product_files(root):
        name = str(path.relative_to(root))
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES and name not in SIZE_EXCEPTIONS:
            found.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{name}:{node.name}" not in SIZE_EXCEPTIONS:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_product_file_or_function_is_too_long() -> None:
    found = oversized(REPO)
    assert not found, "over the size limits (split along the seams, or list in SIZE_EXCEPTIONS with a reason):\n" + (
        "\n".join(found))


def test_a_long_function_is_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    root = _tree(tmp_path, {"serving/long.py": f"def handler():\n{body}\n"})
    assert oversized(root) == [f"serving/long.py:1 handler: {MAX_FUNCTION_LINES + 1} lines"]
