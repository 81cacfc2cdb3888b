"""The model deployment and the limits the Bicep hands the app.

AZURE_OPENAI_RPM follows the deployed model's own ratio of requests per minute to capacity
units (1,000 tokens per minute) from Microsoft's quota tables, not one ratio for all;
model, version, SKU and capacity are azd parameters whose defaults agree everywhere; the
scale and location parameters carry what the platform and azd expect.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.bicep import INFRA, MAIN, is_ref, module, module_params, parse, variables

PARAMETERS = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
AZD_VALUE = re.compile(r"^\$\{(\w+)(?:=(.*))?\}$")


def _param(name: str) -> dict[str, Any]:
    return parse(MAIN)["parameters"][name]


def _decorator(name: str, kind: str) -> Any:
    return next((d["argument"] for d in _param(name)["decorators"] if d["type"] == kind), None)


def _ratios() -> dict[str, int]:
    return {key.strip("'"): value for key, value in variables(MAIN)["requestsPerCapacityUnit"].items()}


def _ratio(model: str, sku: str) -> int:
    """What main.bicep's lookup yields: `model@sku`, else `model`, else 0 (not paced)."""
    ratios = _ratios()
    return ratios.get(f"{model}@{sku}", ratios.get(model, 0))


# ---- the default model ----


def test_default_model_is_the_chosen_ga_model() -> None:
    # gpt-5.6-luna 2026-07-09: GA, GlobalStandard, retirement 2028-01-11 in Microsoft's model
    # retirement schedule of 2026-09-02 (docs/deploy.md, "The model").
    assert _param("openAiModelName")["default"] == "gpt-5.6-luna"
    assert _param("openAiModelVersion")["default"] == "2026-07-09"
    assert _param("openAiDeploymentSku")["default"] == "GlobalStandard"


def test_model_settings_are_azd_parameters_with_the_same_defaults() -> None:
    for param, env in {
        "openAiModelName": "AZURE_OPENAI_MODEL",
        "openAiModelVersion": "AZURE_OPENAI_MODEL_VERSION",
        "openAiDeploymentSku": "AZURE_OPENAI_DEPLOYMENT_SKU",
        "openAiDeploymentCapacity": "AZURE_OPENAI_DEPLOYMENT_CAPACITY",
        "openAiRequestsPerMinute": "AZURE_OPENAI_REQUESTS_PER_MINUTE",
    }.items():
        match = AZD_VALUE.match(PARAMETERS[param]["value"])
        assert match and match.group(1) == env, param
        assert match.group(2) == str(_param(param)["default"]), f"{param}: parameters file and main.bicep disagree"


def test_every_parameter_default_in_the_parameters_file_matches_main() -> None:
    for param, entry in PARAMETERS.items():
        match = AZD_VALUE.match(entry["value"])
        assert match, f"{param}: {entry['value']!r} is not an azd ${{VAR}} reference"
        if match.group(2) is not None:
            assert match.group(2) == str(_param(param)["default"]), param


def test_the_deployment_is_named_after_the_model_and_handed_to_the_app() -> None:
    name = variables(MAIN)["modelDeploymentName"]["operator"]["operands"]
    assert name["false_value"] == "openAiDeploymentName" and name["true_value"] == "openAiModelName"
    assert is_ref(module_params("functionApp")["openAiDeploymentName"], "openAi", "outputs", "deploymentName")


# ---- requests and tokens per minute ----


def test_the_app_gets_capacity_based_tpm_and_the_models_rpm() -> None:
    params = module("functionApp")["config"]["params"]
    assert params["openAiRequestsPerMinute"] == "modelRequestsPerMinute"
    tpm = params["openAiTokensPerMinute"]["operator"]
    assert tpm["type"] == "multiply"
    assert tpm["operands"] == {"operand_1": "openAiDeploymentCapacity", "operand_2": 1000}


def test_rpm_is_capacity_times_the_models_ratio_unless_overridden() -> None:
    v = variables(MAIN)
    rpm = v["modelRequestsPerMinute"]["operator"]["operands"]
    assert rpm["condition"]["operator"]["operands"] == {"operand_1": "openAiRequestsPerMinute", "operand_2": 0}
    assert rpm["true_value"] == "openAiRequestsPerMinute"
    assert rpm["false_value"]["operator"]["operands"] == {
        "operand_1": "openAiDeploymentCapacity",
        "operand_2": "modelRequestsPerCapacityUnit",
    }
    # The lookup tries `model@sku` first, then `model`, and falls back to 0 (not paced).
    key = v["modelRatioKey"]["operator"]["operands"]
    assert key["condition"]["function"]["parameters"] == {
        "container": "requestsPerCapacityUnit",
        "item_to_find": "modelSkuKey",
    }
    assert (key["true_value"], key["false_value"]) == ("modelSkuKey", "openAiModelName")
    unit = v["modelRequestsPerCapacityUnit"]["operator"]["operands"]
    assert unit["false_value"] == 0
    assert v["modelSkuKey"] == "${openAiModelName}@${openAiDeploymentSku}"


@pytest.mark.parametrize(
    ("model", "sku", "ratio"),
    [
        # Figures of Microsoft's quota tables: RPM / (TPM / 1,000) of the same row.
        ("gpt-5.6-luna", "GlobalStandard", 1),  # 1,000 RPM, 1,000,000 TPM
        ("gpt-5.4", "GlobalStandard", 10),  # 10,000 RPM, 1,000,000 TPM
        ("gpt-5.4", "DataZoneStandard", 1),  # 300 RPM, 300,000 TPM
        ("gpt-4o-mini", "GlobalStandard", 10),  # 20,000 RPM, 2,000,000 TPM
        ("o4-mini", "DataZoneStandard", 6),  # 300 per 10 s, 300,000 TPM
        ("a-model-not-in-the-table", "GlobalStandard", 0),
    ],
)
def test_ratios_follow_the_quota_table(model: str, sku: str, ratio: int) -> None:
    assert _ratio(model, sku) == ratio


def test_the_default_model_is_paced() -> None:
    ratio = _ratio(_param("openAiModelName")["default"], _param("openAiDeploymentSku")["default"])
    assert ratio > 0
    assert _param("openAiDeploymentCapacity")["default"] * ratio == 100  # requests per minute by default


def test_ratio_keys_name_an_allowed_sku() -> None:
    skus = set(_decorator("openAiDeploymentSku", "allowed"))
    for key, value in _ratios().items():
        assert isinstance(value, int) and value > 0, key
        model, _, sku = key.partition("@")
        assert model and (not sku or sku in skus), key


# ---- scale, location, principal ----


def test_maximum_instance_count_bounds_are_the_platforms() -> None:
    # "the lowest maximum instance count value is 1, and the highest ... is 1000"
    # (Azure Functions, event-driven scaling, Flex Consumption).
    assert _decorator("maximumInstanceCount", "min_value") == 1
    assert _decorator("maximumInstanceCount", "max_value") == 1000
    assert module_params("functionApp")["maximumInstanceCount"] == "maximumInstanceCount"


def test_location_carries_azd_location_metadata() -> None:
    assert _decorator("location", "metadata") == {"azd": {"type": "location"}}


def test_principal_type_comes_from_azd() -> None:
    assert PARAMETERS["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    assert module_params("rbac")["userPrincipalType"] == "principalType"
