from pathlib import Path

import pytest

from processing.errors import ConfigurationError
from processing.pipelines import Pipeline, load_pipeline, route
from processing.settings import APP_ROOT

SHIPPED = APP_ROOT / "pipelines"


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED.glob("*.toml")))
def test_every_shipped_pipeline_loads_and_round_trips(name):
    pipeline = load_pipeline(name, SHIPPED)
    assert Pipeline.from_dict(pipeline.to_dict()) == pipeline


def test_json_schema_is_made_strict_for_structured_outputs():
    triage = load_pipeline("triage", SHIPPED)
    schema = triage.output.schema
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(schema["properties"])
    assert triage.output.fields == ("category", "priority", "summary")


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path


def test_unknown_pipeline_lists_the_available_ones(tmp_path):
    write(tmp_path, "alpha", 'prompt = "{a}"')
    with pytest.raises(ConfigurationError, match=r"unknown pipeline 'beta'.*available: alpha"):
        load_pipeline("beta", tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('prompt = "{a"', "unmatched"),
        ('prompt = "x"\ntemprature = 1', "unknown setting"),
        ('prompt = "x"\n[output]\nkind = "json"\n[output.schema]\ntype = "array"', 'type = "object"'),
        ('prompt = "x"\n[output]\nkind = "yaml"', "output.kind"),
        ('prompt = "x"\nmax_tokens = 0', "max_tokens"),
        ('prompt = "x"\ndelimiter = "x"', "delimiter"),
        ("prompt = [", "not valid TOML"),
    ],
)
def test_invalid_pipelines_name_the_file_and_the_problem(tmp_path, text, message):
    write(tmp_path, "bad", text)
    with pytest.raises(ConfigurationError, match=message):
        load_pipeline("bad", tmp_path)


def test_pipeline_names_cannot_escape_the_folder(tmp_path):
    with pytest.raises(ConfigurationError, match="not valid"):
        load_pipeline("../secrets", tmp_path)


def test_route_uses_the_first_folder_or_default():
    assert route("triage/2026/tickets.csv") == ("triage", "2026/tickets.csv")
    assert route("tickets.csv") == ("default", "tickets.csv")
