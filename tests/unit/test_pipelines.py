from pathlib import Path

import pytest

from processing.core.errors import ConfigurationError
from processing.core.layout import route
from processing.core.pipelines import Pipeline, load_pipeline
from processing.core.settings import APP_ROOT

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
        ('prompt = "x"\nreasoning_effort = "extreme"', "reasoning_effort must be one of none, minimal, low"),
        ('prompt = "x"\nreasoning_budget = -1', "reasoning_budget must be between 0 and 100000"),
        ('prompt = "x"\nmodel_family = "o-series"', 'model_family must be "auto", "reasoning" or "standard"'),
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


def test_encoding_is_checked_and_stored_by_its_canonical_name(tmp_path):
    write(tmp_path, "latin", 'prompt = "{a}"\nencoding = "Windows-1252"')
    pipeline = load_pipeline("latin", tmp_path)
    assert pipeline.encoding == "cp1252"
    assert Pipeline.from_dict(pipeline.to_dict()) == pipeline


@pytest.mark.parametrize(
    ("value", "message"),
    [('"klingon"', "'klingon' is not a known encoding"), ('"base64"', "'base64' is not a text encoding")],
)
def test_an_unusable_encoding_names_the_pipeline_file(tmp_path, value, message):
    write(tmp_path, "enc", f'prompt = "{{a}}"\nencoding = {value}')
    with pytest.raises(ConfigurationError, match=message) as err:
        load_pipeline("enc", tmp_path)
    assert f"{tmp_path.name}/enc.toml" in str(err.value)
    assert err.value.where == f"{tmp_path.name}/enc.toml" and "enc.toml" in err.value.fix


def test_formula_neutralising_is_on_unless_turned_off(tmp_path):
    write(tmp_path, "on", 'prompt = "{a}"')
    write(tmp_path, "off", 'prompt = "{a}"\nneutralise_formulas = false')
    write(tmp_path, "bad", 'prompt = "{a}"\nneutralise_formulas = "no"')
    assert load_pipeline("on", tmp_path).neutralise_formulas is True
    off = load_pipeline("off", tmp_path)
    assert off.neutralise_formulas is False and Pipeline.from_dict(off.to_dict()) == off
    with pytest.raises(ConfigurationError, match="neutralise_formulas must be true or false"):
        load_pipeline("bad", tmp_path)


def test_a_manifest_from_before_the_new_settings_still_loads():
    old = {"name": "x", "prompt": "{a}", "delimiter": "", "output": {"kind": "text", "column": "answer"}}
    pipeline = Pipeline.from_dict(old)
    assert (pipeline.encoding, pipeline.neutralise_formulas) == ("", True)


SCHEMA = 'prompt = "x"\n[output]\nkind = "json"\n[output.schema]\ntype = "object"\n'


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ('[output.schema.properties.a]\ntype = "strin"', r"properties\.a has unknown type 'strin'"),
        ("[output.schema.properties.a]\nenum = []", r"properties\.a\.enum must be a non-empty list"),
        ('[output.schema.properties.a]\ntype = "array"', r"properties\.a is an array: give it an items"),
        ('[output.schema.properties.a]\ntype = "object"', r"properties\.a is an object: give it properties"),
        (
            '[output.schema.properties.a]\ntype = "array"\n[output.schema.properties.a.items]\ntype = "nope"',
            r"properties\.a\.items has unknown type",
        ),
    ],
)
def test_an_invalid_json_schema_is_refused_when_the_pipeline_loads(tmp_path, props, message):
    write(tmp_path, "schema", SCHEMA + props)
    with pytest.raises(ConfigurationError, match=message) as err:
        load_pipeline("schema", tmp_path)
    assert err.value.where.endswith("schema.toml")


def test_nested_objects_are_made_strict_too(tmp_path):
    write(
        tmp_path,
        "nested",
        SCHEMA
        + '[output.schema.properties.who]\ntype = "object"\n'
        + '[output.schema.properties.who.properties.name]\ntype = "string"\n'
        + '[output.schema.properties.tags]\ntype = "array"\n'
        + '[output.schema.properties.tags.items]\ntype = "object"\n'
        + '[output.schema.properties.tags.items.properties.t]\ntype = ["string", "null"]\n',
    )
    pipeline = load_pipeline("nested", tmp_path)
    who = pipeline.output.schema["properties"]["who"]
    assert who["required"] == ["name"] and who["additionalProperties"] is False
    item = pipeline.output.schema["properties"]["tags"]["items"]
    assert item["required"] == ["t"] and item["additionalProperties"] is False
    assert Pipeline.from_dict(pipeline.to_dict()) == pipeline


def test_an_unknown_pipeline_says_where_and_how_to_fix(tmp_path):
    write(tmp_path, "alpha", 'prompt = "{a}"')
    with pytest.raises(ConfigurationError) as err:
        load_pipeline("beta", tmp_path)
    assert err.value.where == "the input folder input/beta/ (its name selects the pipeline)"
    assert "alpha" in err.value.fix and "beta.toml" in err.value.fix


def test_a_snapshot_from_before_model_families_loads_with_the_defaults():
    old = load_pipeline("triage", SHIPPED).to_dict()
    for name in ("reasoning_effort", "reasoning_budget", "model_family"):
        old.pop(name)
    pipeline = Pipeline.from_dict(old)
    assert (pipeline.reasoning_effort, pipeline.reasoning_budget, pipeline.model_family) == ("", 2000, "")
