"""Security policy on the parsed templates: keyless everywhere, least-privilege roles.

checkov (test_checkov.py) checks some of this too; these tests read the templates
directly, so they also cover what checkov cannot express (role GUIDs per principal,
delivery identity, outputs).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from processing.core import layout
from tests.infra import bicep
from tests.infra.bicep import INFRA, MAIN, Resource
from tests.infra.roles import (
    ACCOUNT,
    DEAD_LETTER_CONTAINER,
    EXPECTED_ASSIGNMENTS,
    PRINCIPAL_SOURCES,
    ROLES,
    SCOPE_TYPES,
)

RBAC = INFRA / "core" / "rbac.bicep"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"

SECRET_NAME = re.compile(r"key|secret|password|passwd|connectionstring|token|sas|credential", re.IGNORECASE)


def _literal_property(type_: str, *path: str) -> list[object]:
    found = [r for r in bicep.all_resources(type_) if not r.existing]
    assert found, f"no {type_} in infra/"
    return [bicep.dig(r.body, "properties", *path) for r in found]


# ---- keyless resources ----


def test_storage_accepts_no_keys_and_no_anonymous_access() -> None:
    assert _literal_property("Microsoft.Storage/storageAccounts", "allowSharedKeyAccess") == [False]
    assert _literal_property("Microsoft.Storage/storageAccounts", "allowBlobPublicAccess") == [False]
    assert _literal_property("Microsoft.Storage/storageAccounts", "minimumTlsVersion") == ["TLS1_2"]
    assert _literal_property("Microsoft.Storage/storageAccounts", "supportsHttpsTrafficOnly") == [True]
    assert _literal_property("Microsoft.Storage/storageAccounts", "defaultToOAuthAuthentication") == [True]


def test_containers_are_private() -> None:
    containers = [
        r for r in bicep.all_resources("Microsoft.Storage/storageAccounts/blobServices/containers") if not r.existing
    ]
    assert containers
    assert all(bicep.dig(c.body, "properties", "publicAccess") == "None" for c in containers)


def test_openai_accepts_only_entra_tokens() -> None:
    assert _literal_property("Microsoft.CognitiveServices/accounts", "disableLocalAuth") == [True]
    account = bicep.only(
        [r for r in bicep.all_resources("Microsoft.CognitiveServices/accounts") if not r.existing], "account"
    )
    assert account.body["kind"] == "OpenAI"
    # Entra token authentication needs the custom subdomain endpoint.
    assert bicep.dig(account.body, "properties", "customSubDomainName") == "name"


def test_monitoring_accepts_only_entra_tokens() -> None:
    assert _literal_property("Microsoft.Insights/components", "DisableLocalAuth") == [True]
    assert _literal_property("Microsoft.OperationalInsights/workspaces", "features", "disableLocalAuth") == [True]


def test_function_app_uses_its_system_identity_for_everything() -> None:
    app = bicep.only([r for r in bicep.all_resources("Microsoft.Web/sites") if not r.existing], "function app")
    assert app.body["kind"] == "functionapp,linux"
    assert bicep.dig(app.body, "identity", "type") == "SystemAssigned"
    config = bicep.dig(app.body, "properties", "functionAppConfig")
    storage = bicep.dig(config, "deployment", "storage")
    assert storage["type"] == "blobContainer"
    assert bicep.dig(storage, "authentication") == {"type": "SystemAssignedIdentity"}
    assert bicep.dig(config, "runtime") == {"name": "python", "version": "3.11"}
    assert bicep.dig(config, "scaleAndConcurrency") == {
        "maximumInstanceCount": "maximumInstanceCount",
        "instanceMemoryMB": "instanceMemoryMB",
    }
    assert bicep.dig(app.body, "properties", "httpsOnly") is True
    assert bicep.dig(app.body, "properties", "siteConfig", "ftpsState") == "Disabled"


def test_function_app_runs_on_flex_consumption() -> None:
    plan = bicep.only(bicep.all_resources("Microsoft.Web/serverfarms"), "plan")
    assert plan.body["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert bicep.dig(plan.body, "properties", "reserved") is True  # Linux


def test_basic_auth_publishing_is_off() -> None:
    policies = bicep.all_resources("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p.body["name"] for p in policies} == {"ftp", "scm"}
    assert all(bicep.dig(p.body, "properties", "allow") is False for p in policies)


def test_event_grid_delivers_with_its_own_identity_to_a_queue() -> None:
    topic = bicep.only(
        [r for r in bicep.all_resources("Microsoft.EventGrid/systemTopics") if not r.existing], "system topic"
    )
    assert bicep.dig(topic.body, "identity", "type") == "SystemAssigned"
    assert bicep.dig(topic.body, "properties", "topicType") == "Microsoft.Storage.StorageAccounts"

    sub = bicep.only(bicep.all_resources("Microsoft.EventGrid/systemTopics/eventSubscriptions"), "event subscription")
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


# ---- what arrives is kept and logged ----

DIAGNOSTICS = "Microsoft.Insights/diagnosticSettings"

# Monitored resource type -> the log categories its diagnostic setting must enable.
REQUIRED_LOGS = {
    "Microsoft.Storage/storageAccounts/blobServices": {"StorageRead", "StorageWrite", "StorageDelete"},
    "Microsoft.Storage/storageAccounts/queueServices": {"StorageRead", "StorageWrite", "StorageDelete"},
    "Microsoft.CognitiveServices/accounts": {"Audit", "RequestResponse"},
    "Microsoft.Web/sites": {"FunctionAppLogs"},
}


def test_diagnostic_settings_send_the_required_logs_to_the_workspace() -> None:
    monitored = [r for r in bicep.all_resources() if r.type in REQUIRED_LOGS and not r.existing]
    assert {r.type for r in monitored} == set(REQUIRED_LOGS)
    for res in monitored:
        settings = [d for d in bicep.resources(res.file, DIAGNOSTICS) if d.body.get("scope") == res.symbol]
        setting = bicep.only(settings, f"diagnostic setting of {res.symbol}")
        assert setting.condition is None and setting.api_version == "2021-05-01-preview"
        logs = {log["category"] for log in setting.body["properties"]["logs"] if log["enabled"] is True}
        assert logs == REQUIRED_LOGS[res.type], res.symbol
        assert setting.body["properties"]["workspaceId"] == "logAnalyticsWorkspaceId"
    for name in ("storage", "openAi", "functionApp"):
        param = bicep.module(name)["config"]["params"]["logAnalyticsWorkspaceId"]
        assert bicep.is_ref(param, "monitoring", "outputs", "logAnalyticsId"), name


def test_previous_blob_versions_are_kept_and_then_deleted() -> None:
    service = bicep.only(
        [r for r in bicep.all_resources("Microsoft.Storage/storageAccounts/blobServices") if not r.existing],
        "blob service",
    )
    assert bicep.dig(service.body, "properties", "isVersioningEnabled") is True
    policy = bicep.only(bicep.all_resources("Microsoft.Storage/storageAccounts/managementPolicies"), "lifecycle policy")
    assert policy.body["parent"] == bicep.dig(service.body, "parent")
    rule = bicep.only(bicep.dig(policy.body, "properties", "policy", "rules"), "lifecycle rule")
    assert rule["enabled"] is True and rule["type"] == "Lifecycle"
    assert bicep.dig(rule, "definition", "actions") == {
        "version": {"delete": {"daysAfterCreationGreaterThan": "blobVersionRetentionDays"}}
    }
    assert bicep.module_params("storage")["blobVersionRetentionDays"] == "blobVersionRetentionDays"


def test_undeliverable_events_are_dead_lettered_with_the_topics_identity() -> None:
    sub = bicep.only(bicep.all_resources("Microsoft.EventGrid/systemTopics/eventSubscriptions"), "event subscription")
    props = sub.body["properties"]
    assert "deadLetterDestination" not in props
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"] == {
        "endpointType": "StorageBlob",
        "properties": {
            "resourceId": {
                "operator": {"type": "property_accessor", "operands": {"operand_1": "storage", "operand_2": "id"}}
            },
            "blobContainerName": "deadLetterContainerName",
        },
    }


# ---- role assignments ----


def _role_assignments() -> list[Resource]:
    return bicep.all_resources(ROLE_ASSIGNMENT)


def _scope_resources() -> dict[str, Resource]:
    return {r.symbol: r for r in bicep.resources(RBAC) if r.existing}


def _scope_symbol_and_index(expr: Any) -> tuple[str, str | None]:
    """`scope: name` or `scope: name[i]` (one of a loop of existing resources)."""
    if isinstance(expr, str):
        return expr, None
    operator = bicep.dig(expr, "operator")
    assert operator["type"] == "index_accessor", f"unexpected scope {expr!r}"
    return operator["operands"]["operand_1"], operator["operands"]["operand_2"]


def _scopes(ra: Resource) -> list[str]:
    """What `ra` is scoped to, one description per assignment it makes (loops expanded)."""
    assert "scope" in ra.body, f"{ra.symbol}: no scope means the whole resource group"
    symbol, index = _scope_symbol_and_index(ra.body["scope"])
    target = _scope_resources().get(symbol)
    assert target is not None, f"{ra.symbol}: scope must be an existing resource declared in rbac.bicep"
    kind = SCOPE_TYPES.get(target.type)
    assert kind is not None, f"{ra.symbol}: scoped to a {target.type}"
    if target.type.endswith(("/containers", "/queues")):
        service = _scope_resources()[target.body["parent"]]
        assert service.body["name"] == "default" and service.body["parent"] == "storage", ra.symbol
    rbac = bicep.module_scope("rbac")
    if target.loop is not None:
        # A loop of assignments over the same array as the loop of scopes, index for index.
        detail = target.loop["detail"]
        assert ra.loop is not None and index == ra.loop["detail"]["index_name"], ra.symbol
        assert ra.loop["detail"]["array_name"] == detail["array_name"], ra.symbol
        assert target.body["name"] == detail["item_name"], ra.symbol
        return [f"{kind} {name}" for name in rbac[detail["array_name"]]]
    assert index is None and ra.loop is None, ra.symbol
    if kind in ("container", "queue"):
        return [f"{kind} {bicep.resolve(target.body['name'], rbac)}"]
    return [kind]


def _assignments() -> list[tuple[Resource, str, tuple[str, str, str, str]]]:
    """(resource, role variable, (principal, principalType, role name, scope)) per assignment."""
    role_vars = bicep.variables(RBAC)
    found = []
    for ra in _role_assignments():
        props = ra.body["properties"]
        role_def = bicep.dig(props, "roleDefinitionId", "function")
        assert role_def["type"] == "subscription_resource_id"
        assert role_def["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role_var = role_def["parameters"]["resource_name_1"]
        guid = role_vars.get(role_var)
        assert guid in ROLES, f"{ra.symbol}: role {role_var}={guid!r} is not an allowed built-in role"
        for scope in _scopes(ra):
            found.append((ra, role_var, (props["principalId"], props["principalType"], ROLES[guid], scope)))
    return found


def test_role_assignments_live_in_one_module() -> None:
    assert {r.file for r in _role_assignments()} == {RBAC}


def test_every_role_assignment_is_expected_and_scoped_to_what_it_is_for() -> None:
    seen = [key for _, _, key in _assignments()]
    assert len(seen) == len(set(seen)), f"duplicate assignments: {sorted(k for k in seen if seen.count(k) > 1)}"
    assert set(seen) == EXPECTED_ASSIGNMENTS, (
        f"unexpected: {sorted(set(seen) - EXPECTED_ASSIGNMENTS)}; missing: {sorted(EXPECTED_ASSIGNMENTS - set(seen))}"
    )


def test_only_the_table_role_and_the_deploying_principal_are_account_wide() -> None:
    # Nothing the Function App or Event Grid does needs a blob or queue role on the whole
    # account; the host's monthly diagnostics table cannot be named in advance.
    account_wide = {key for _, _, key in _assignments() if key[3] == ACCOUNT}
    assert account_wide == {
        ("functionAppPrincipalId", "ServicePrincipal", "Storage Table Data Contributor", ACCOUNT),
        ("userPrincipalId", "userPrincipalType", "Storage Blob Data Contributor", ACCOUNT),
        ("userPrincipalId", "userPrincipalType", "Storage Queue Data Contributor", ACCOUNT),
    }


def test_event_grid_may_send_to_the_uploads_queue_only() -> None:
    event_grid = {key[2:] for _, _, key in _assignments() if key[0] == "eventGridPrincipalId"}
    assert event_grid == {
        ("Storage Queue Data Message Sender", f"queue {layout.UPLOADS_QUEUE}"),
        ("Storage Blob Data Contributor", f"container {DEAD_LETTER_CONTAINER}"),
    }


def test_every_role_scope_is_created_by_the_storage_module() -> None:
    containers = set(bicep.module_params("storage")["containers"])
    queues = set(bicep.module_params("storage")["queues"])
    for _, _, (_, _, _, scope) in _assignments():
        kind, _, name = scope.partition(" ")
        if kind == "container":
            assert name in containers, scope
        elif kind == "queue":
            assert name in queues, scope


def test_role_assignment_names_are_guid_of_scope_principal_and_role() -> None:
    for ra, role_var, _ in _assignments():
        name = bicep.dig(ra.body, "name", "function")
        assert name["type"] == "guid"
        scope_id = {
            "operator": {"type": "property_accessor", "operands": {"operand_1": ra.body["scope"], "operand_2": "id"}}
        }
        assert list(name["parameters"].values()) == [scope_id, ra.body["properties"]["principalId"], role_var], (
            f"{ra.symbol}: name must be guid(<scope>.id, principal, {role_var})"
        )


def test_user_assignments_are_skipped_without_a_principal_and_take_its_type() -> None:
    for ra in _role_assignments():
        props = ra.body["properties"]
        if props["principalId"] == "userPrincipalId":
            assert ra.condition is not None, f"{ra.symbol} must be conditional on userPrincipalId"
            assert props["principalType"] == "userPrincipalType", f"{ra.symbol}: principalType must be the parameter"
        else:
            # The identities this deployment creates are service principals, whoever deploys.
            assert props["principalType"] == "ServicePrincipal", ra.symbol


def test_principal_type_parameter_allows_what_azd_sets() -> None:
    for template, param in ((MAIN, "principalType"), (RBAC, "userPrincipalType")):
        declared = bicep.parse(template)["parameters"][param]
        assert declared["default"] == "User"
        allowed = next(d["argument"] for d in declared["decorators"] if d["type"] == "allowed")
        assert {"User", "ServicePrincipal"} <= set(allowed), template.name


def test_rbac_receives_the_right_principals() -> None:
    params = bicep.module("rbac")["config"]["params"]
    for param, source in PRINCIPAL_SOURCES.items():
        assert bicep.is_ref(params[param], *source), f"rbac.{param} must be {'.'.join(source)}"
    assert bicep.parse(MAIN)["parameters"]["principalId"]["default"] == ""


def test_each_role_assignment_names_its_role_in_a_comment() -> None:
    lines = RBAC.read_text().splitlines()
    role_vars = bicep.variables(RBAC)
    by_symbol = {ra.symbol: ra for ra in _role_assignments()}
    for number, line in enumerate(lines):
        match = re.match(r"resource (\w+) 'Microsoft\.Authorization/roleAssignments@", line)
        if not match:
            continue
        ra = by_symbol[match.group(1)]
        role_var = ra.body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role_name = ROLES[role_vars[role_var]]
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
            assert ROLES[match.group(1)] == match.group(2), line


# ---- no keys, no secrets ----


def _infra_text_files() -> list[Path]:
    return [*bicep.bicep_files(), INFRA / "main.parameters.json", INFRA.parent / "azure.yaml"]


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
    for path in bicep.bicep_files():
        template = bicep.parse(path)
        for name, output in template.get("outputs", {}).items():
            assert not SECRET_NAME.search(name), f"{path.name}: output {name} looks like a secret"
            decorators = {d["type"] for d in output.get("decorators", [])}
            assert "secure" not in decorators, f"{path.name}: output {name} is @secure"
            assert "ConnectionString" not in repr(output["value"]), f"{path.name}: output {name}"
            assert "InstrumentationKey" not in repr(output["value"]), f"{path.name}: output {name}"
        for name, param in template.get("parameters", {}).items():
            decorators = {d["type"] for d in param.get("decorators", [])}
            assert "secure" not in decorators, f"{path.name}: parameter {name} is a secret input"
