"""The house's shape: no import loops anywhere in the package, core's wings import one way only, and
the built-in plugins reach core only through ``cnnkit.api``, as a third party must. Every import
statement counts, also the ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnkit"
# core's wings from the bottom up; a wing imports only from wings listed before it (and itself)
WINGS = [["base"], ["data", "weights", "metrics"], ["models"], ["tasks"], ["deploy"], ["load"], ["train"], ["explain"]]
RANK = {wing: rank for rank, names in enumerate(WINGS) for wing in names}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (module level and inside functions)."""
    targets = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            candidates = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
                break
    return targets


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "core" else None


def test_no_import_loops() -> None:
    assert cycles(graph()) == []


def test_core_wings_import_one_way() -> None:
    """A wing imports only from the wings below it; core imports nothing above core."""
    bad = []
    for module, targets in graph().items():
        if not module.startswith("cnnkit.core."):
            continue
        here = wing(module)
        assert here in RANK, f"{module}: core modules live in a wing ({', '.join(RANK)})"
        for target in targets:
            there = wing(target)
            if there is None and target != "cnnkit.core":
                bad.append(f"{module} -> {target} (above core)")
            elif there is not None and there != here and RANK[there] >= RANK[here]:
                bad.append(f"{module} -> {target} ({here} may not import {there})")
    assert bad == []


def test_builtin_plugins_use_only_the_plugin_api() -> None:
    """Built-in plugins import ``cnnkit.api`` and their own modules, nothing else of cnnkit."""
    bad = []
    for module, targets in graph().items():
        if not module.startswith("cnnkit.plugins."):
            continue
        own = ".".join(module.split(".")[:3])
        bad += [f"{module} -> {t}" for t in targets
                if t != "cnnkit.api" and not t.startswith(own + ".") and t != own and t != "cnnkit.plugins"]
    assert bad == []


def test_the_checker_finds_a_loop_and_an_upward_import(tmp_path: Path) -> None:
    """The walk sees imports inside functions and relative imports: a broken tree fails it."""
    pkg = tmp_path / "cnnkit"
    (pkg / "core" / "base").mkdir(parents=True)
    (pkg / "core" / "train").mkdir()
    for init in (pkg, pkg / "core", pkg / "core" / "base", pkg / "core" / "train"):
        (init / "__init__.py").write_text("")
    (pkg / "core" / "base" / "a.py").write_text("def f():\n    from cnnkit.core.train import b\n")
    (pkg / "core" / "train" / "b.py").write_text("from ..base import a\n")
    found = modules(pkg)
    edges = {name: imports(name, path, set(found)) for name, path in found.items()}
    assert cycles(edges) == [["cnnkit.core.base.a", "cnnkit.core.train.b"]]
    assert RANK[wing("cnnkit.core.train.b")] > RANK[wing("cnnkit.core.base.a")]


@pytest.mark.parametrize("module", ["cnnkit", "cnnkit.commands"])
def test_start_up_modules_stay_light(module: str) -> None:
    """``import cnnkit`` and the command line's module import no torch (checked in a fresh process)."""
    import subprocess
    import sys

    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'torchvision', 'mlflow', 'albumentations', 'timm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.strip()
    assert out == "[]"


def test_every_name_of_the_plugin_api_resolves() -> None:
    """Each name ``cnnkit.api`` offers loads (a moved module would leave a plugin's import broken)."""
    import cnnkit.api as api

    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert missing == []
