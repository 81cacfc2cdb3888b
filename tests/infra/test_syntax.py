"""The syntax gate: every .bicep file is valid Bicep (tree-sitter) and readable by pycep."""

from __future__ import annotations

from tests.infra.bicep import FIXTURES, INFRA, bicep_files, parse, syntax_errors

EXPECTED_MODULES = {
    "main.bicep",
    "core/storage.bicep",
    "core/monitoring.bicep",
    "core/openai.bicep",
    "core/rbac.bicep",
    "core/workbook.bicep",
    "app/functions.bicep",
    "app/eventgrid.bicep",
    "app/eventsubscription.bicep",
}


def test_infra_has_the_expected_templates() -> None:
    found = {str(path.relative_to(INFRA)) for path in bicep_files()}
    assert found == EXPECTED_MODULES


def test_every_bicep_file_is_valid_bicep() -> None:
    problems = [problem for path in bicep_files() for problem in syntax_errors(path)]
    assert not problems, "Bicep syntax errors:\n" + "\n".join(problems)


def test_every_bicep_file_parses_with_pycep() -> None:
    # checkov reads Bicep with this same parser and silently skips a file it cannot read
    # (union types, decorators on type properties and `if (` in filtered loops trip it).
    for path in bicep_files():
        template = parse(path)
        assert template.get("resources") or template.get("modules"), f"{path}: nothing parsed"


def test_the_gate_reports_file_and_line_of_a_syntax_error() -> None:
    broken = FIXTURES / "syntax" / "broken.bicep"
    problems = syntax_errors(broken)
    assert problems
    assert all(problem.startswith(f"{broken}:") for problem in problems)
    line = int(problems[0].split(":")[1])
    assert 4 <= line <= 11, problems  # the unclosed resource body


def test_the_gate_accepts_valid_bicep_pycep_cannot_read() -> None:
    # Valid Bicep that checkov would skip: tree-sitter accepts it, so only the
    # "every file was scanned" check in test_checkov.py catches it.
    assert syntax_errors(FIXTURES / "policies" / "pycep_unsupported.bicep") == []
