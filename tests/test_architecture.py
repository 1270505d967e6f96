"""Dependencies point one way (STYLE.md "Layout", docs/architecture.md), read from the source
with `ast`.

- every module under `inventory/domain/` imports only the standard library and
  `inventory.domain.*`;
- the packages are layered, lowest first: `conf` (typed settings from the environment) <
  `venues` < `inventory` < `operations` < `service` < `console` < `rebalancer` (the project
  package: settings, URLs, WSGI, the API root); a package imports only packages below it;
- an app's `admin.py` is the console's page for that app's models (Django's pattern: each
  app's admin module registers on the admin site): it sits at the console's layer, so it may
  import the console, and no module of ours imports it (the admin's autodiscovery does);
- no two files of the packages import each other, directly or through others (no cycle).

Every import counts: module level, inside functions and under `TYPE_CHECKING`. No exception.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first: each imports only those before it.
LAYERS = ("conf", "venues", "inventory", "operations", "service", "console", "rebalancer")
APPS = LAYERS
# Apps with models (and migrations).
MODEL_APPS = ("inventory", "operations", "service", "console", "rebalancer")
# `<app>/admin.py`: the console's layer (see the module docstring).
ADMIN_LAYER = LAYERS.index("console")


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


def is_admin_module(path: str) -> bool:
    return Path(path).name == "admin.py" and len(Path(path).parts) == 2


def layer_violations(directory: str, imports: dict[str, set[str]]) -> dict[str, list[str]]:
    """Per file of `directory`: the imported modules of a package above its layer."""
    own = LAYERS.index(directory)
    bad = {}
    for path, names in imports.items():
        top = max(own, ADMIN_LAYER) if is_admin_module(path) else own
        above = LAYERS[top + 1 :]
        wrong = sorted(n for n in names if any(is_within(n, p) for p in above))
        if wrong:
            bad[path] = wrong
    return bad


@pytest.mark.parametrize("directory", LAYERS)
def test_each_package_imports_only_packages_below_it(directory):
    imports = imports_of(directory)
    assert imports, f"no modules found under {directory}/"
    assert layer_violations(directory, imports) == {}


def test_no_module_imports_an_apps_admin():
    admin_modules = {f"{app}.admin" for app in LAYERS}
    bad = {
        path: sorted(n for n in names if n in admin_modules)
        for app in LAYERS
        for path, names in imports_of(app).items()
    }
    assert {path: names for path, names in bad.items() if names} == {}


def test_layer_checker_refuses_upward_imports_and_allows_admin_modules_the_console():
    imports = {
        "operations/services.py": {"inventory.models", "service.trigger", "conf.env"},
        "operations/admin.py": {"console.modeladmin", "service.selectors"},
        "operations/admin_helpers.py": {"console.site"},
        "console/admin.py": {"rebalancer.api"},
    }
    assert layer_violations("operations", imports) == {
        "operations/services.py": ["service.trigger"],
        "operations/admin_helpers.py": ["console.site"],
        "console/admin.py": ["rebalancer.api"],
    }
    assert layer_violations("conf", {"conf/env.py": {"inventory.models"}}) == {
        "conf/env.py": ["inventory.models"]
    }


def module_files() -> dict[str, Path]:
    """Every module of the apps (migrations aside) by its dotted name."""
    return {module_name(path): path for app in APPS for path in python_files(app)}


def file_imports(source: str, module: str, modules: Iterable[str], *, is_package: bool) -> set[str]:
    """The modules among `modules` that `source` imports: `from a import b` is the file a/b.py
    when there is one, else a (its __init__); `import a.b.c` is the longest known prefix."""
    known = set(modules)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{prefix}.{node.module}" if node.module else prefix
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_no_import_cycles_between_files():
    modules = module_files()
    graph = {
        name: file_imports(
            path.read_text(encoding="utf-8"), name, modules, is_package=path.name == "__init__.py"
        )
        for name, path in modules.items()
    }
    assert len(graph) > 100
    assert import_cycles(graph) == []


# A migration's models name their field classes by import path (Django's deconstruction).
MIGRATION_FIELD_MODULES = frozenset({"inventory.fields"})


def test_migrations_import_no_live_app_code():
    """What a migration does is frozen in it: a later change to an app's code cannot change
    an old migration (shared pieces come from earlier migrations by `import_module`)."""
    bad = {}
    for app in MODEL_APPS:
        for path in sorted((ROOT / app / "migrations").glob("*.py")):
            names = imported_modules(path.read_text(encoding="utf-8"), module_name(path))
            app_names = sorted(
                n
                for n in names
                if any(is_within(n, a) for a in APPS) and n not in MIGRATION_FIELD_MODULES
            )
            if app_names:
                bad[str(path.relative_to(ROOT))] = app_names
    assert bad == {}


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
    import conf.env

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
        "conf.env",
        "operations.models",
    }


def test_checker_resolves_relative_imports_in_a_package_init():
    assert imported_modules("from .values import X", "inventory.domain", is_package=True) == {
        "inventory.domain.values"
    }


def test_cycle_checker_finds_cycles_through_any_import():
    modules = {"a.store", "a.projection", "a.models", "a", "b.base", "b.context"}
    store = file_imports(
        "def f():\n    from a.projection import apply\nfrom a import models",
        "a.store",
        modules,
        is_package=False,
    )
    assert store == {"a.projection", "a.models"}
    projection = file_imports(
        "if TYPE_CHECKING:\n    from .store import Stored",
        "a.projection",
        modules,
        is_package=False,
    )
    assert projection == {"a.store"}
    graph = {
        "a.store": store,
        "a.projection": projection,
        "b.base": {"b.context"},
        "b.context": {"b.base", "a.models"},
        "a.models": set(),
    }
    assert import_cycles(graph) == [["a.projection", "a.store"], ["b.base", "b.context"]]
    assert import_cycles({"a.store": {"a.models"}, "a.models": set()}) == []


def test_stdlib_detection():
    assert is_stdlib("__future__") and is_stdlib("decimal") and is_stdlib("os.path")
    assert not is_stdlib("django") and not is_stdlib("inventory.domain")
    assert is_within("inventory.domain.units", "inventory.domain")
    assert not is_within("inventory.domainx", "inventory.domain")
