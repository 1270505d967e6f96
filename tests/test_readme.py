"""Issues 9 and 22: the README and the documents it leads to describe what exists. Every file or
directory they name in backticks is in the repository, every `manage.py` command they name
exists, the README stays a guide (about 200 lines, the two commands first), and docs/api.md is
what the API's OpenAPI document says now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command, get_commands

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCUMENTS = [
    "README.md",
    "CHANGELOG.md",
    "bench/RESULTS.md",
    "docs/deploy.md",
    "docs/operations.md",
    "docs/architecture.md",
    "docs/api.md",
]


def text(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_path_a_document_names_exists(document):
    named = set()
    for quoted in re.findall(r"`([^`\s]+)`", text(document)):
        path = quoted.split("::")[0].rstrip(".,;:")
        looks_like_path = "/" in path or re.search(r"\.(py|md|sh|json|toml|txt)$", path)
        # Not a URL or a route, nor runtime state under var/ (created by bin/run, gitignored),
        # nor a placeholder (`<token>`), nor an environment assignment (`DATABASE_URL=...`).
        if looks_like_path and not re.match(r"(/|[a-z]+:|var/|[A-Z_]+=)", path) and "<" not in path:
            named.add(path.removeprefix("./"))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_manage_py_command_a_document_names_exists(document):
    named = set(re.findall(r"manage\.py ([a-z_]+)", text(document)))
    assert sorted(named - set(get_commands())) == []


def test_the_documents_name_commands():
    """The two checks above are not vacuous: the README names paths and commands."""
    assert re.findall(r"manage\.py ([a-z_]+)", README)
    assert "docs/deploy.md" in README and "bench/RESULTS.md" in README


def test_the_readme_is_a_guide_that_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 210, len(lines)
    commands = [line.split()[0] for line in lines[:8] if line.startswith("bin/")]
    assert commands == ["bin/run", "bin/test"]
    for document in DOCUMENTS[1:]:
        assert f"`{document}`" in README, f"the README does not lead to {document}"


def test_the_readme_names_no_design_document_that_is_not_there():
    for document in DOCUMENTS:
        for named in re.findall(r"[\w/.-]*(?:DESIGN|design)[\w/.-]*\.md", text(document)):
            assert (ROOT / named).exists(), named


def test_deploy_keeps_a_production_settings_section():
    assert "\n## Production settings\n" in text("docs/deploy.md")


def test_docs_api_md_is_what_the_openapi_document_says_now():
    call_command("apidocs", "--check")  # raises CommandError naming the fix when stale
