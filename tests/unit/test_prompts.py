import pytest

from processing.core.errors import ConfigurationError
from processing.core.prompts import Template


def test_renders_columns_by_name_and_keeps_literal_braces():
    t = Template.parse("Order {Order ID}: {{not a column}} {note}")
    assert t.columns == ("Order ID", "note")
    assert t.bind(["note", "Order ID"]).render(["fragile", "A-17"]) == "Order A-17: {not a column} fragile"


def test_braces_inside_a_cell_are_not_expanded_again():
    bound = Template.parse("Say: {text}").bind(["text", "secret"])
    assert bound.render(["{secret} and {text}", "hidden"]) == "Say: {secret} and {text}"


@pytest.mark.parametrize("source", ["{a.__class__}", "{a[0]}", "{a!r}"])
def test_attribute_and_index_access_are_only_ever_column_names(source):
    # `{a.__class__}` is the name of a column, never Python attribute access.
    t = Template.parse(source)
    assert t.missing_columns(["a"]) == [source[1:-1]]
    with pytest.raises(ConfigurationError, match="missing from the file"):
        t.bind(["a"])


@pytest.mark.parametrize("source", ["unmatched { brace", "stray } here", "empty {} placeholder"])
def test_malformed_templates_are_rejected_with_a_reason(source):
    with pytest.raises(ConfigurationError):
        Template.parse(source)


def test_duplicate_header_binds_first_occurrence():
    assert Template.parse("{x}").bind(["x", "x"]).render(["first", "second"]) == "first"
