"""Security policy on the parsed templates: keyless everywhere, least-privilege roles.

checkov (test_checkov.py) checks some of this too; these tests read the templates
directly, so they also cover what checkov cannot express (role GUIDs per principal,
delivery identity, outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.infra.bicep import (
    INFRA,
    MAIN,
    all_resources,
    bicep_files,
    dig,
    is_ref,
    module,
    only,
    parse,
    resources,
    variables,
)
from tests.infra.roles import EXPECTED_ASSIGNMENTS, PRINCIPAL_SOURCES, ROLES

RBAC = INFRA / "core" / "rbac.bicep"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"

SECRET_NAME = re.compile(r"key|secret|password|passwd|connectionstring|token|sas|credential", re.IGNORECASE)


def _literal_property(type_: str, *path: str) -> list[object]:
    found = [r for r in all_resources(type_) if not r.existing]
    assert found, f"no {type_} in infra/"
    return [dig(r.body, "properties", *path) for r in found]


# ---- keyless resources ----


def test_storage_accepts_no_keys_and_no_anonymous_access() -> None:
    assert _literal_property("Microsoft.Storage/storageAccounts", "allowSharedKeyAccess") == [False]
    assert _literal_property("Microsoft.Storage/storageAccounts", "allowBlobPublicAccess") == [False]
    assert _literal_property("Microsoft.Storage/storageAccounts", "minimumTlsVersion") == ["TLS1_2"]
    assert _literal_property("Microsoft.Storage/storageAccounts", "supportsHttpsTrafficOnly") == [True]
    assert _literal_property("Microsoft.Storage/storageAccounts", "defaultToOAuthAuthentication") == [True]


def test_containers_are_private() -> None:
    containers = all_resources("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert containers
    assert all(dig(c.body, "properties", "publicAccess") == "None" for c in containers)


def test_openai_accepts_only_entra_tokens() -> None:
    assert _literal_property("Microsoft.CognitiveServices/accounts", "disableLocalAuth") == [True]
    account = only([r for r in all_resources("Microsoft.CognitiveServices/accounts") if not r.existing], "account")
    assert account.body["kind"] == "OpenAI"
    # Entra token authentication needs the custom subdomain endpoint.
    assert dig(account.body, "properties", "customSubDomainName") == "name"


def test_monitoring_accepts_only_entra_tokens() -> None:
    assert _literal_property("Microsoft.Insights/components", "DisableLocalAuth") == [True]
    assert _literal_property("Microsoft.OperationalInsights/workspaces", "features", "disableLocalAuth") == [True]


def test_function_app_uses_its_system_identity_for_everything() -> None:
    app = only([r for r in all_resources("Microsoft.Web/sites") if not r.existing], "function app")
    assert app.body["kind"] == "functionapp,linux"
    assert dig(app.body, "identity", "type") == "SystemAssigned"
    config = dig(app.body, "properties", "functionAppConfig")
    storage = dig(config, "deployment", "storage")
    assert storage["type"] == "blobContainer"
    assert dig(storage, "authentication") == {"type": "SystemAssignedIdentity"}
    assert dig(config, "runtime") == {"name": "python", "version": "3.11"}
    assert dig(config, "scaleAndConcurrency") == {
        "maximumInstanceCount": "maximumInstanceCount",
        "instanceMemoryMB": "instanceMemoryMB",
    }
    assert dig(app.body, "properties", "httpsOnly") is True
    assert dig(app.body, "properties", "siteConfig", "ftpsState") == "Disabled"


def test_function_app_runs_on_flex_consumption() -> None:
    plan = only(all_resources("Microsoft.Web/serverfarms"), "plan")
    assert plan.body["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert dig(plan.body, "properties", "reserved") is True  # Linux


def test_basic_auth_publishing_is_off() -> None:
    policies = all_resources("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p.body["name"] for p in policies} == {"ftp", "scm"}
    assert all(dig(p.body, "properties", "allow") is False for p in policies)


def test_event_grid_delivers_with_its_own_identity_to_a_queue() -> None:
    topic = only([r for r in all_resources("Microsoft.EventGrid/systemTopics") if not r.existing], "system topic")
    assert dig(topic.body, "identity", "type") == "SystemAssigned"
    assert dig(topic.body, "properties", "topicType") == "Microsoft.Storage.StorageAccounts"

    sub = only(all_resources("Microsoft.EventGrid/systemTopics/eventSubscriptions"), "event subscription")
    props = sub.body["properties"]
    # No plain `destination`: that would be a webhook or a key-based delivery.
    assert "destination" not in props
    assert props["eventDeliverySchema"] == "EventGridSchema"
    delivery = props["deliveryWithResourceIdentity"]
    assert delivery["identity"] == {"type": "SystemAssigned"}
    assert delivery["destination"]["endpointType"] == "StorageQueue"
    assert set(delivery["destination"]["properties"]) >= {"resourceId", "queueName"}

    filt = props["filter"]
    assert filt["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert filt["subjectEndsWith"] == ".csv"
    assert filt["advancedFilters"] == [
        {
            "operatorType": "StringIn",
            "key": "data.api",
            "values": ["PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"],
        }
    ]


# ---- role assignments ----


def _role_assignments() -> list:
    return all_resources(ROLE_ASSIGNMENT)


def test_role_assignments_live_in_one_module() -> None:
    assert {r.file for r in _role_assignments()} == {RBAC}


def test_every_role_assignment_is_expected_and_least_privilege() -> None:
    role_vars = variables(RBAC)
    scopes = {r.symbol: r for r in resources(RBAC) if r.existing}
    seen = set()
    for ra in _role_assignments():
        props = ra.body["properties"]
        role_def = dig(props, "roleDefinitionId", "function")
        assert role_def["type"] == "subscription_resource_id"
        assert role_def["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role_var = role_def["parameters"]["resource_name_1"]
        guid = role_vars.get(role_var)
        assert guid in ROLES, f"{ra.symbol}: role {role_var}={guid!r} is not an allowed built-in role"
        role_name, scope_type = ROLES[guid]

        # Scoped to one resource of the right type, never the group or subscription.
        scope = scopes.get(ra.body.get("scope"))
        assert scope is not None, f"{ra.symbol}: scope must be a resource declared in rbac.bicep"
        assert scope.type == scope_type, f"{ra.symbol}: {role_name} scoped to {scope.type}"

        principal = props["principalId"]
        name = dig(ra.body, "name", "function")
        assert name["type"] == "guid"
        assert list(name["parameters"].values()) == [
            {"operator": {"type": "property_accessor", "operands": {"operand_1": scope.symbol, "operand_2": "id"}}},
            principal,
            role_var,
        ], f"{ra.symbol}: name must be guid({scope.symbol}.id, {principal}, {role_var})"

        key = (principal, props["principalType"], role_name)
        assert key not in seen, f"duplicate assignment {key}"
        seen.add(key)
    assert seen == EXPECTED_ASSIGNMENTS


def test_user_assignments_are_skipped_without_a_principal() -> None:
    for ra in _role_assignments():
        if ra.body["properties"]["principalId"] == "userPrincipalId":
            assert ra.condition is not None, f"{ra.symbol} must be conditional on userPrincipalId"


def test_rbac_receives_the_right_principals() -> None:
    params = module("rbac")["config"]["params"]
    for param, source in PRINCIPAL_SOURCES.items():
        assert is_ref(params[param], *source), f"rbac.{param} must be {'.'.join(source)}"
    assert parse(MAIN)["parameters"]["principalId"]["default"] == ""


def test_each_role_assignment_names_its_role_in_a_comment() -> None:
    lines = RBAC.read_text().splitlines()
    role_vars = variables(RBAC)
    by_symbol = {ra.symbol: ra for ra in _role_assignments()}
    for number, line in enumerate(lines):
        match = re.match(r"resource (\w+) 'Microsoft\.Authorization/roleAssignments@", line)
        if not match:
            continue
        ra = by_symbol[match.group(1)]
        role_var = ra.body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role_name = ROLES[role_vars[role_var]][0]
        comment = []
        for previous in reversed(lines[:number]):
            if not previous.startswith("//"):
                break
            comment.append(previous)
        assert any(c.startswith(f"// {role_name}:") for c in comment), f"{ra.symbol}: comment must name {role_name}"


def test_role_guid_variables_carry_the_role_name() -> None:
    for line in RBAC.read_text().splitlines():
        match = re.match(r"var \w+ = '([0-9a-f-]{36})' // (.+)$", line)
        if match:
            assert ROLES[match.group(1)][0] == match.group(2), line


# ---- no keys, no secrets ----


def _infra_text_files() -> list[Path]:
    return [*bicep_files(), INFRA / "main.parameters.json", INFRA.parent / "azure.yaml"]


def test_no_key_listing_or_key_material_anywhere() -> None:
    forbidden = re.compile(
        r"listKeys|listAccountSas|listServiceSas|listConnectionStrings|AccountKey=|SharedAccessSignature=|"
        r"SharedAccessKey=|primaryKey|secondaryKey",
        re.IGNORECASE,
    )
    for path in _infra_text_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert not forbidden.search(line), f"{path}:{number}: {line.strip()}"


def test_no_output_or_parameter_carries_a_secret() -> None:
    for path in bicep_files():
        template = parse(path)
        for name, output in template.get("outputs", {}).items():
            assert not SECRET_NAME.search(name), f"{path.name}: output {name} looks like a secret"
            decorators = {d["type"] for d in output.get("decorators", [])}
            assert "secure" not in decorators, f"{path.name}: output {name} is @secure"
            assert "ConnectionString" not in repr(output["value"]), f"{path.name}: output {name}"
            assert "InstrumentationKey" not in repr(output["value"]), f"{path.name}: output {name}"
        for name, param in template.get("parameters", {}).items():
            decorators = {d["type"] for d in param.get("decorators", [])}
            assert "secure" not in decorators, f"{path.name}: parameter {name} is a secret input"
