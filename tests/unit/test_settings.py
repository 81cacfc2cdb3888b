from collections.abc import Iterator, Mapping

import pytest

from processing.core.errors import ConfigurationError
from processing.core.settings import (
    APP_ROOT,
    DEFAULTS,
    SETTINGS_REFERENCE,
    Settings,
    StorageSettings,
    TelemetrySettings,
    markdown_table,
)
from rowsmith_cli.settings import CLI_SETTINGS_REFERENCE, CliSettings


class Recording(Mapping[str, str]):
    """A mapping that remembers every name asked of it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key, default=None):
        self.asked.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


BASE = {
    "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/",
    "AzureWebJobsStorage__accountName": "acct",
}


def test_the_reference_lists_exactly_what_settings_reads():
    env = Recording(dict(BASE))
    Settings.from_env(env)
    TelemetrySettings.from_env(env)  # read apart: telemetry starts before the app's connections
    assert env.asked == {s.name for s in SETTINGS_REFERENCE}


def test_cli_reference_matches_cli_settings():
    env = Recording({})
    CliSettings.from_env(env)
    assert env.asked == {s.name for s in CLI_SETTINGS_REFERENCE}


def test_identity_based_storage_from_account_name():
    s = Settings.from_env(BASE)
    assert s.storage.is_identity_based
    assert s.storage.blob_url == "https://acct.blob.core.windows.net"
    assert s.openai_endpoint == "https://x.openai.azure.com"
    assert not s.managed_identity


def test_managed_identity_when_the_platform_says_so():
    assert Settings.from_env({**BASE, "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi"}).managed_identity


def test_missing_storage_names_both_ways_to_configure_it():
    with pytest.raises(ConfigurationError, match=r"accountName.*Azurite"):
        StorageSettings.from_env({})


@pytest.mark.parametrize(
    ("name", "value"), [("ROWSMITH_SHARD_ROWS", "ten"), ("ROWSMITH_SHARD_ROWS", "0"), ("ROWSMITH_SHARD_ROWS", "50000")]
)
def test_bad_numbers_name_the_setting(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**BASE, name: value})


def test_openai_endpoint_is_required():
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        Settings.from_env({"AzureWebJobsStorage__accountName": "acct"})


def _readme_settings() -> dict[str, tuple[str, str]]:
    """The README's configuration table: name -> (default, Azure column)."""
    text = (APP_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = (cells[1], cells[2])
    return table


def test_the_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    table = _readme_settings()
    documented = {doc.name: doc for doc in (*SETTINGS_REFERENCE, *CLI_SETTINGS_REFERENCE)}
    assert set(table) == set(documented)
    for name, (default, azure) in table.items():
        doc = documented[name]
        assert default == (doc.documented_default or "—"), name
        assert (azure == "yes") == doc.azure, name


def test_the_readme_configuration_table_is_the_one_rendered_from_the_settings_table() -> None:
    readme = (APP_ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table((*SETTINGS_REFERENCE, *CLI_SETTINGS_REFERENCE)) in readme


def test_settings_and_manifests_take_their_defaults_from_the_table() -> None:
    from processing.core.manifest import Manifest

    settings = Settings.from_env(BASE)
    for setting in SETTINGS_REFERENCE:
        if setting.attribute and setting.default is not None:
            assert getattr(settings, setting.attribute) == setting.default, setting.name
    manifest = Manifest("j", "input", "a.csv", "u", "e", "default", "default/a")
    assert (manifest.shard_rows, manifest.shard_max_blocks) == (DEFAULTS["shard_rows"], DEFAULTS["shard_max_blocks"])
