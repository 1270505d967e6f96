"""Issue 9: the README describes what exists. Every file or directory it names in backticks is
in the repository, and every `manage.py` command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_path_the_readme_names_exists():
    named = set()
    for quoted in re.findall(r"`([^`\s]+)`", README):
        path = quoted.split("::")[0].rstrip(".,;:")
        looks_like_path = "/" in path or re.search(r"\.(py|md|sh|json|toml|txt)$", path)
        # Not a URL or a route, nor runtime state under var/ (created by bin/run, gitignored).
        if looks_like_path and not re.match(r"(/|[a-z]+:|var/)", path):
            named.add(path.removeprefix("./"))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert named and missing == []


def test_every_manage_py_command_the_readme_names_exists():
    named = set(re.findall(r"manage\.py ([a-z_]+)", README))
    assert named and sorted(named - set(get_commands())) == []


def test_the_readme_names_no_design_document_that_is_not_there():
    for document in re.findall(r"[\w/.-]*(?:DESIGN|design)[\w/.-]*\.md", README):
        assert (ROOT / document).exists(), document
