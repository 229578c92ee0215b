"""The package layout rule (README, Layout): each wing of ``benchmarks_it_maps`` imports only the wings below it,
and ``harmonized_models`` imports nothing of ``benchmarks_it_maps`` but ``home``.

Read from the source with ``ast`` (every import statement, at module level or inside a function), so the rule holds
for lazy imports too and the test needs no heavy import.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "benchmarks_it_maps"
#: Wings from the bottom up; a module may import its own wing and any wing listed before it.
WINGS = ("home", "data", "benchmarks", "runs", "analysis", "submission", "cli")
#: Known exceptions, each with the issue that removes it (none left: issue 12 gave the twin its own geometry).
ALLOWED: set = set()


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def wing_of(module: str) -> str | None:
    """The wing of a ``benchmarks_it_maps`` module name (None for the package root itself)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    return parts[1] if parts[1] in WINGS else None


def library_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def violations_of_wing_rule() -> list[str]:
    found = []
    for path in library_files(PACKAGE):
        rel = path.relative_to(ROOT)
        own = wing_of(".".join(rel.with_suffix("").parts))
        if own is None:  # the package root (__init__, __main__) is the facade over every wing
            continue
        for name in imported_modules(path):
            target = wing_of(name)
            allowed = any(str(rel) == where and (name == what or name.startswith(what + "."))
                          for where, what in ALLOWED)
            if target is not None and WINGS.index(target) > WINGS.index(own) and not allowed:
                found.append(f"{rel} ({own}) imports {name} ({target})")
    return sorted(set(found))


def test_wings_import_only_the_wings_below():
    assert violations_of_wing_rule() == []


def test_model_package_imports_only_home_of_the_benchmark_package():
    bad = sorted({f"{path.relative_to(ROOT)} imports {name}"
                  for path in library_files("harmonized_models")
                  for name in imported_modules(path)
                  if name.split(".")[0] == PACKAGE and name not in (PACKAGE, f"{PACKAGE}.home")
                  and not name.startswith(f"{PACKAGE}.home.")})
    assert bad == []


def test_every_wing_says_what_it_holds():
    for wing in WINGS[1:]:
        init = ROOT / PACKAGE / wing / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{init} needs a one-line docstring"


@pytest.mark.parametrize("wing, upper", [("data", "benchmarks"), ("benchmarks", "runs"), ("runs", "analysis")])
def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch, wing, upper):
    """The check itself can fail: a module of a lower wing that imports a higher one is reported."""
    fake_root = tmp_path / "repo"
    (fake_root / PACKAGE / wing).mkdir(parents=True)
    (fake_root / PACKAGE / wing / "bad.py").write_text(f"from {PACKAGE}.{upper} import something\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert violations_of_wing_rule() == [f"{PACKAGE}/{wing}/bad.py ({wing}) imports {PACKAGE}.{upper} ({upper})",
                                         f"{PACKAGE}/{wing}/bad.py ({wing}) imports {PACKAGE}.{upper}.something "
                                         f"({upper})"]


def test_twin_shares_no_code_with_what_it_tests():
    """The simulated twin writes its own layout, geometry and MAT files: it imports none of the conventions, the
    MAT reader/writer or the benchmarks (a wrong convention there must make the recovery tests fail, not cancel)."""
    names = imported_modules(ROOT / PACKAGE / "data" / "simulate.py")
    shared = sorted(n for n in names if n.startswith((f"{PACKAGE}.data.conventions", f"{PACKAGE}.data.matfile",
                                                      f"{PACKAGE}.benchmarks")))
    assert shared == []
