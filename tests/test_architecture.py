"""Dependencies point one way (STYLE.md "Layout"), read from the source with `ast`.

- every module under `inventory/domain/` imports only the standard library and
  `inventory.domain.*`;
- `venues` imports no app (`inventory`, `operations`, `rebalancer`);
- `inventory` imports neither `operations` nor `rebalancer`;
- `operations` does not import `rebalancer`.

Every import counts: module level, inside functions and under `TYPE_CHECKING`.

One exception: `rebalancer.config` (typed settings parsed from the environment) may be
imported by `inventory` and `operations`. It is a leaf: a test below keeps it free of app
imports, so the dependency graph stays acyclic. Moving it to a neutral package would remove
the exception.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("inventory", "operations", "rebalancer", "venues")
# Leaf modules of the project package that lower layers may read (see the module docstring).
LEAF_CONFIG = frozenset({"rebalancer.config"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module `source` imports (relative imports resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                if node.module:
                    found.add(f"{base}.{node.module}")
                else:
                    found.update(f"{base}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module or "")
    return found


def python_files(directory: str) -> list[Path]:
    return sorted(p for p in (ROOT / directory).rglob("*.py") if "migrations" not in p.parts)


def imports_of(directory: str) -> dict[str, set[str]]:
    root = ROOT / directory
    if not root.is_dir():
        pytest.skip(f"{directory}/ does not exist yet; the rule applies once it does")
    result = {}
    for path in python_files(directory):
        result[str(path.relative_to(ROOT))] = imported_modules(
            path.read_text(encoding="utf-8"),
            module_name(path),
            is_package=path.name == "__init__.py",
        )
    return result


def is_stdlib(name: str) -> bool:
    return name.partition(".")[0] in sys.stdlib_module_names


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_domain_imports_only_stdlib_and_domain():
    imports = imports_of("inventory/domain")
    assert imports, "no modules found under inventory/domain"
    bad = {
        path: sorted(n for n in names if not is_stdlib(n) and not is_within(n, "inventory.domain"))
        for path, names in imports.items()
    }
    assert {path: names for path, names in bad.items() if names} == {}


@pytest.mark.parametrize(
    ("directory", "forbidden", "allowed"),
    [
        ("venues", ("inventory", "operations", "rebalancer"), frozenset()),
        ("inventory", ("operations", "rebalancer"), LEAF_CONFIG),
        ("operations", ("rebalancer",), LEAF_CONFIG),
    ],
    ids=["venues-imports-no-app", "inventory-imports-no-later-layer", "operations-not-rebalancer"],
)
def test_dependencies_point_one_way(directory, forbidden, allowed):
    imports = imports_of(directory)
    bad = {
        path: sorted(
            n for n in names if any(is_within(n, f) for f in forbidden) and n not in allowed
        )
        for path, names in imports.items()
    }
    assert {path: names for path, names in bad.items() if names} == {}


def test_leaf_config_imports_no_app():
    for name in LEAF_CONFIG:
        path = ROOT / (name.replace(".", "/") + ".py")
        names = imported_modules(path.read_text(encoding="utf-8"), name)
        assert sorted(n for n in names if any(is_within(n, app) for app in APPS)) == []


# --- the checker itself ---------------------------------------------------------------------


def test_checker_sees_every_kind_of_import():
    source = """
import json, os.path
from decimal import Decimal
from inventory.domain import events
from . import values
from .units import to_units
from .. import store

def lazy():
    import rebalancer.config

if TYPE_CHECKING:
    from operations.models import Operation
"""
    found = imported_modules(source, "inventory.domain.position")
    assert found == {
        "json",
        "os.path",
        "decimal",
        "inventory.domain",
        "inventory.domain.values",
        "inventory.domain.units",
        "inventory.store",
        "rebalancer.config",
        "operations.models",
    }


def test_checker_resolves_relative_imports_in_a_package_init():
    assert imported_modules("from .values import X", "inventory.domain", is_package=True) == {
        "inventory.domain.values"
    }


def test_stdlib_detection():
    assert is_stdlib("__future__") and is_stdlib("decimal") and is_stdlib("os.path")
    assert not is_stdlib("django") and not is_stdlib("inventory.domain")
    assert is_within("inventory.domain.units", "inventory.domain")
    assert not is_within("inventory.domainx", "inventory.domain")
