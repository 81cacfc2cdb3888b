"""Where the local stack's state lives, and how a second `rowsmith local up` compares its options."""

from __future__ import annotations

from pathlib import Path

from rowsmith_cli import local
from rowsmith_cli.main import build_parser
from rowsmith_cli.settings import STATE_DIR_NAME, CliSettings, default_state_dir, project_root


def make_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "function_app.py").write_text("")
    return root


def test_the_state_dir_is_in_the_project_the_package_came_from_whatever_the_cwd(tmp_path: Path):
    project = make_project(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    assert default_state_dir(project, elsewhere) == project / STATE_DIR_NAME
    assert project_root(project, elsewhere) == project


def test_an_installed_package_finds_the_project_up_from_the_cwd(tmp_path: Path):
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    project = make_project(tmp_path / "repo")
    (project / "samples" / "more").mkdir(parents=True)
    assert default_state_dir(site_packages, project / "samples" / "more") == project / STATE_DIR_NAME
    # Outside any project: the cwd, as a last resort.
    assert default_state_dir(site_packages, tmp_path) == tmp_path / STATE_DIR_NAME


def test_rowsmith_state_dir_wins_and_is_made_absolute(tmp_path: Path):
    cli = CliSettings.from_env({"ROWSMITH_STATE_DIR": "rel/state"}, cwd=tmp_path)
    assert cli.state_dir == tmp_path / "rel" / "state"
    # Unset: not relative to the cwd but to the project this checkout is (pyproject.toml, function_app.py).
    unset = CliSettings.from_env({}, cwd=tmp_path)
    assert unset.state_dir.name == STATE_DIR_NAME and (unset.state_dir.parent / "function_app.py").is_file()


def up_args(*argv: str):
    return build_parser().parse_args(["local", "up", *argv])


def test_the_same_options_do_not_differ_and_other_ones_are_named():
    running = local.requested_options(up_args("--rpm", "600"))
    assert local.differing_options(running, local.requested_options(up_args("--rpm", "600"))) == {}
    asked = local.requested_options(up_args("--rpm", "900", "--in-memory"))
    assert local.differing_options(running, asked) == {"rpm": (600, 900), "in_memory": (False, True)}
    message = local.options_differ_message(local.differing_options(running, asked), asked)
    assert "--rpm 600 (asked: 900)" in message and "--in-memory off (asked: on)" in message
    assert message.endswith("`rowsmith local down && rowsmith local up --rpm 900 --in-memory`")


def test_a_stack_that_recorded_no_options_is_not_compared():
    # A state file written by an older `rowsmith` (or a test harness) has no options.json.
    assert local.differing_options({}, local.requested_options(up_args("--rpm", "5"))) == {}


def test_the_quota_paces_the_app_as_well_as_the_emulator():
    from localdev.stack import Stack, StackPorts

    stack = Stack(workdir=Path("/x"), ports=StackPorts(1, 2, 3, 4, 5), settings={"A": "b"}, services={})
    settings = local.local_app_settings(stack, 2.0, rpm=600, tpm=60000)
    assert (settings["AZURE_OPENAI_RPM"], settings["AZURE_OPENAI_TPM"]) == ("600", "60000")
    assert "AZURE_OPENAI_RPM" not in local.local_app_settings(stack, 2.0)
