"""The Bicep creates exactly the names the code uses, and sets exactly the settings it reads.

Sources of truth on the app side: processing/core/layout.py, processing/core/settings.py
(SETTINGS_REFERENCE, CLI_SETTINGS_REFERENCE), function_app.py (read with ast, not
imported, so this test does not depend on the Functions runtime) and host.json.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import yaml

from localdev.event_grid.subscription import CSV_UPLOADS
from processing.core import layout
from processing.core.settings import SETTINGS_REFERENCE
from rowsmith_cli.settings import CLI_SETTINGS_REFERENCE
from tests.infra import bicep
from tests.infra.bicep import INFRA, MAIN, REPO
from tests.infra.roles import DEAD_LETTER_CONTAINER, HOST_CONTAINERS
from tests.infra.roles import DEPLOYMENT_CONTAINER as DEPLOYMENT_CONTAINER_NAME

# App settings the Bicep sets that are not the app's own (SETTINGS_REFERENCE), with why.
PLATFORM_SETTINGS = {
    f"{layout.STORAGE_CONNECTION}__credential": "makes the host's storage connection use the managed identity",
    f"{layout.STORAGE_CONNECTION}__tableServiceUri": "the host writes diagnostic events to tables; the app uses none",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "makes the host send telemetry with an Entra token",
    "PYTHON_ENABLE_OPENTELEMETRY": "makes the Python worker join the host's OpenTelemetry trace context",
}

# Flex Consumption rejects these as app settings: functionAppConfig carries them.
FLEX_FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
}

# The deployment-package container exists only on the Bicep side.
DEPLOYMENT_CONTAINER = re.compile(r"^app-package")

# Containers that are not the app's (processing/core/layout.py), with why they exist.
INFRA_CONTAINERS = {
    "azure-webjobs-hosts": "the Functions host's locks and host id; created here so its role can be scoped to it",
    "azure-webjobs-secrets": "the Functions host's key store; created here for the same reason",
    DEAD_LETTER_CONTAINER: "Event Grid writes events it could not deliver here",
}


# ---- what the Bicep creates ----


def _storage_names() -> tuple[list[str], list[str]]:
    """Containers and queues main.bicep asks the storage module to create."""
    storage_file = bicep.module_file("storage")
    containers = bicep.only(
        bicep.resources(storage_file, "Microsoft.Storage/storageAccounts/blobServices/containers"), "loop"
    )
    queues = bicep.only(bicep.resources(storage_file, "Microsoft.Storage/storageAccounts/queueServices/queues"), "loop")
    # The module makes one container per item of `containers` and one queue per `queues`.
    for loop, param in ((containers, "containers"), (queues, "queues")):
        assert loop.loop is not None and loop.loop["detail"]["array_name"] == param
        assert loop.body["name"] == loop.loop["detail"]["item_name"]
    params = bicep.module_params("storage")
    return params["containers"], params["queues"]


def _app_settings() -> dict[str, Any]:
    app = bicep.only(
        [r for r in bicep.resources(bicep.module_file("functionApp"), "Microsoft.Web/sites") if not r.existing], "app"
    )
    settings = bicep.dig(app.body, "properties", "siteConfig", "appSettings")
    names_ = [s["name"] for s in settings]
    assert len(names_) == len(set(names_)), f"duplicate app settings: {names_}"
    # No other place may set app settings (a sites/config 'appsettings' would replace these).
    assert not bicep.all_resources("Microsoft.Web/sites/config")
    return {s["name"]: s["value"] for s in settings}


# ---- what the app uses ----


def _names_constant(node: ast.expr) -> str:
    """The string a decorator argument holds: a literal or a processing.core.layout constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(layout, node.id, None)
    elif isinstance(node, ast.Attribute):
        value = getattr(layout, node.attr, None)
    else:
        value = None
    assert isinstance(value, str), f"cannot resolve {ast.unparse(node)} in function_app.py"
    return value


def _function_app_bindings() -> tuple[set[str], set[str]]:
    """Queue names and connection names used in function_app.py's decorators."""
    tree = ast.parse((REPO / "function_app.py").read_text())
    queues, connections = set(), set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "queue_name":
                queues.add(_names_constant(kw.value))
            elif kw.arg == "connection":
                connections.add(_names_constant(kw.value))
    return queues, connections


# ---- containers and queues ----


def test_containers_match_the_code() -> None:
    containers, _ = _storage_names()
    extra = [c for c in containers if DEPLOYMENT_CONTAINER.match(c)]
    assert extra == [DEPLOYMENT_CONTAINER_NAME], f"expected one deployment-package container, got {extra}"
    assert sorted(set(containers) - set(extra) - set(INFRA_CONTAINERS)) == sorted(layout.ALL_CONTAINERS)
    assert set(INFRA_CONTAINERS) <= set(containers)
    assert len(containers) == len(set(containers))


def test_host_and_dead_letter_containers_are_the_ones_their_roles_name() -> None:
    assert set(HOST_CONTAINERS) | {DEAD_LETTER_CONTAINER} == set(INFRA_CONTAINERS)
    rbac = bicep.module_params("rbac")
    assert rbac["hostContainers"] == list(HOST_CONTAINERS)
    assert rbac["deadLetterContainer"] == DEAD_LETTER_CONTAINER
    assert sorted(rbac["appContainers"]) == sorted(layout.ALL_CONTAINERS)
    assert sorted(rbac["appQueues"]) == sorted(layout.ALL_QUEUES)
    assert rbac["uploadsQueue"] == layout.UPLOADS_QUEUE
    assert rbac["deploymentContainer"] == bicep.module_params("functionApp")["deploymentContainerName"]
    assert bicep.module_params("blobCreated")["deadLetterContainerName"] == DEAD_LETTER_CONTAINER


def test_deployment_package_container_is_the_one_flex_reads() -> None:
    containers, _ = _storage_names()
    deployment = bicep.module_params("functionApp")["deploymentContainerName"]
    assert DEPLOYMENT_CONTAINER.match(deployment)
    assert deployment in containers


def test_queues_match_the_code() -> None:
    _, queues = _storage_names()
    assert sorted(queues) == sorted(layout.ALL_QUEUES)
    assert len(queues) == len(set(queues))


def test_every_trigger_queue_exists_and_every_app_queue_has_a_trigger() -> None:
    _, queues = _storage_names()
    trigger_queues, _ = _function_app_bindings()
    assert trigger_queues, "function_app.py declares no queue trigger"
    assert trigger_queues <= set(queues), f"queues the Bicep does not create: {trigger_queues - set(queues)}"
    assert set(layout.APP_QUEUES) <= trigger_queues


def test_host_poison_queues_exist() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    # Queue triggers in Python come from the extension bundle.
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1
    _, queues = _storage_names()
    # After maxDequeueCount the host moves a message to <queue>-poison.
    trigger_queues, _ = _function_app_bindings()
    for queue in trigger_queues - {q for q in trigger_queues if q.endswith(layout.POISON_SUFFIX)}:
        assert queue + layout.POISON_SUFFIX in queues


def _csv_subscription() -> tuple[dict[str, Any], dict[str, Any]]:
    """The event subscription's properties and the names visible in its module."""
    scope = bicep.module_scope("blobCreated")
    sub = bicep.only(
        bicep.resources(bicep.module_file("blobCreated"), "Microsoft.EventGrid/systemTopics/eventSubscriptions"),
        "subscription",
    )
    return sub.body["properties"], scope


def test_event_grid_feeds_the_uploads_queue_from_the_input_container() -> None:
    props, scope = _csv_subscription()
    assert scope["queueName"] == layout.UPLOADS_QUEUE
    assert scope["inputContainerName"] == layout.INPUT_CONTAINER
    filt = bicep.resolve(props["filter"], scope)
    assert filt["subjectBeginsWith"] == f"/blobServices/default/containers/{layout.INPUT_CONTAINER}/"
    destination = props["deliveryWithResourceIdentity"]["destination"]["properties"]
    assert bicep.resolve(destination["queueName"], scope) == layout.UPLOADS_QUEUE


def test_the_local_event_grid_applies_the_bicep_subscription() -> None:
    """localdev's Event Grid (what `rowsmith local up` and the tests run) filters and delivers as Azure's."""
    props, scope = _csv_subscription()
    assert CSV_UPLOADS.bicep_filter() == bicep.resolve(props["filter"], scope)
    assert props["eventDeliverySchema"] == "EventGridSchema"  # the schema localdev.event_grid.events builds
    destination = bicep.resolve(props["deliveryWithResourceIdentity"]["destination"]["properties"], scope)
    assert destination["queueName"] == CSV_UPLOADS.queue_name
    assert destination["queueMessageTimeToLiveInSeconds"] == CSV_UPLOADS.queue_message_ttl_seconds


# ---- app settings and connections ----


def test_settings_the_app_reads_in_azure_are_set() -> None:
    settings = _app_settings()
    wanted = {doc.name for doc in SETTINGS_REFERENCE if doc.azure}
    assert wanted <= set(settings), f"missing app settings: {sorted(wanted - set(settings))}"


def test_every_app_setting_is_known() -> None:
    known = {doc.name for doc in SETTINGS_REFERENCE} | set(PLATFORM_SETTINGS)
    unknown = set(_app_settings()) - known
    assert not unknown, f"app settings neither in SETTINGS_REFERENCE nor PLATFORM_SETTINGS: {sorted(unknown)}"


def test_platform_settings_are_not_the_apps_own() -> None:
    # If the app starts reading one of these, it belongs in SETTINGS_REFERENCE instead.
    assert not set(PLATFORM_SETTINGS) & {doc.name for doc in SETTINGS_REFERENCE}


def test_no_flex_forbidden_or_key_bearing_setting() -> None:
    settings = _app_settings()
    assert not set(settings) & FLEX_FORBIDDEN_SETTINGS
    # The plain connection-string form would carry a key; so would an API key.
    assert layout.STORAGE_CONNECTION not in settings
    assert "AZURE_OPENAI_API_KEY" not in settings
    for name, value in settings.items():
        assert "AccountKey=" not in repr(value) and "SharedAccessSignature" not in repr(value), name


def test_trigger_connections_are_identity_based() -> None:
    settings = _app_settings()
    _, connections = _function_app_bindings()
    assert connections == {layout.STORAGE_CONNECTION}
    for conn in connections:
        assert settings[f"{conn}__credential"] == "managedidentity"
        assert f"{conn}__blobServiceUri" in settings
        assert f"{conn}__queueServiceUri" in settings


def test_app_settings_point_at_the_deployed_resources() -> None:
    settings = _app_settings()
    conn = layout.STORAGE_CONNECTION
    expected = {
        f"{conn}__blobServiceUri": ("storage", "properties", "primaryEndpoints", "blob"),
        f"{conn}__queueServiceUri": ("storage", "properties", "primaryEndpoints", "queue"),
        f"{conn}__tableServiceUri": ("storage", "properties", "primaryEndpoints", "table"),
        "APPLICATIONINSIGHTS_CONNECTION_STRING": ("appInsights", "properties", "ConnectionString"),
    }
    for name, ref in expected.items():
        assert bicep.is_ref(settings[name], *ref), f"{name} = {settings[name]!r}"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert settings["AZURE_OPENAI_ENDPOINT"] == "openAiEndpoint"
    assert settings["AZURE_OPENAI_DEPLOYMENT"] == "openAiDeploymentName"
    assert settings["AZURE_OPENAI_API_VERSION"] == "openAiApiVersion"


def test_default_api_version_matches_the_app() -> None:
    from processing.core.settings import DEFAULT_API_VERSION

    assert bicep.parse(MAIN)["parameters"]["openAiApiVersion"]["default"] == DEFAULT_API_VERSION


# ---- azd: azure.yaml, parameters, outputs ----


def test_azure_yaml_deploys_this_folder_as_the_tagged_function_app() -> None:
    config = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    services = config["services"]
    assert len(services) == 1
    service_name, service = next(iter(services.items()))
    assert service == {"project": ".", "language": "python", "host": "function"}
    # azd finds the app by its azd-service-name tag.
    assert bicep.variables(MAIN)["serviceName"] == service_name
    assert bicep.module_params("functionApp")["serviceName"] == service_name
    app = bicep.only(
        [r for r in bicep.resources(bicep.module_file("functionApp"), "Microsoft.Web/sites") if not r.existing], "app"
    )
    tags = app.body["tags"]["function"]
    assert tags["type"] == "union"
    assert list(tags["parameters"].values()) == ["tags", {"'azd-service-name'": "serviceName"}]


def test_every_tracked_resource_carries_the_azd_env_tag() -> None:
    assert bicep.variables(MAIN)["tags"] == {"'azd-env-name'": "environmentName"}
    tracked = {
        "Microsoft.Resources/resourceGroups",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.CognitiveServices/accounts",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.EventGrid/systemTopics",
    }
    found = [r for r in bicep.all_resources() if r.type in tracked and not r.existing]
    assert {r.type for r in found} == tracked
    for res in found:
        tags = res.body.get("tags")
        assert tags == "tags" or bicep.dig(tags, "function", "parameters", "arg_1") == "tags", f"{res.symbol}: {tags!r}"
    for name, mod in bicep.parse(MAIN)["modules"].items():
        params = bicep.parse(bicep.module_file(name)).get("parameters", {})
        if "tags" in params:
            assert mod["config"]["params"]["tags"] == "tags", name


def test_names_come_from_the_abbreviations_file() -> None:
    abbrs = json.loads((INFRA / "abbreviations.json").read_text())
    used = set()
    for mod in bicep.parse(MAIN)["modules"].values():
        for value in mod["config"]["params"].values():
            if isinstance(value, str):
                used |= set(re.findall(r"\$\{abbrs\.(\w+)\}\$\{resourceToken\}", value))
    rg = bicep.only(bicep.resources(MAIN, "Microsoft.Resources/resourceGroups"), "resource group")
    assert rg.body["name"] == "${abbrs.resourcesResourceGroups}${environmentName}"
    used.add("resourcesResourceGroups")
    assert used == set(abbrs), f"unused or unknown abbreviations: {used ^ set(abbrs)}"
    token = bicep.dig(bicep.variables(MAIN)["resourceToken"], "function", "parameters", "string_to_change", "function")
    assert token["type"] == "unique_string"
    assert list(token["parameters"].values())[1:] == ["environmentName", "location"]
    assert bicep.dig(token, "parameters", "base_string", "function") == {
        "type": "subscription",
        "parameters": {"subscription_id": None},
        "property_name": "id",
    }


def test_parameters_file_covers_main_parameters() -> None:
    declared = bicep.parse(MAIN)["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared)
    required = {name for name, param in declared.items() if "default" not in param}
    assert required <= set(given)
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    assert given["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_outputs_give_azd_and_the_cli_what_they_need() -> None:
    outputs = bicep.parse(MAIN)["outputs"]
    scope = bicep.variables(MAIN)
    required = {
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_DEPLOYMENT",
        "AZURE_OPENAI_API_VERSION",
    }
    # What the rowsmith CLI reads from the environment azd writes.
    required |= {doc.name for doc in CLI_SETTINGS_REFERENCE if doc.name.startswith("AZURE_")}
    assert required <= set(outputs), f"missing outputs: {sorted(required - set(outputs))}"
    named = {
        "AZURE_STORAGE_INPUT_CONTAINER": layout.INPUT_CONTAINER,
        "AZURE_STORAGE_OUTPUT_CONTAINER": layout.OUTPUT_CONTAINER,
        "AZURE_STORAGE_JOBS_CONTAINER": layout.JOBS_CONTAINER,
        "AZURE_STORAGE_UPLOADS_QUEUE": layout.UPLOADS_QUEUE,
        "AZURE_STORAGE_ROWS_QUEUE": layout.ROWS_QUEUE,
        "AZURE_STORAGE_FINALIZE_QUEUE": layout.FINALIZE_QUEUE,
    }
    for output, value in named.items():
        assert bicep.resolve(outputs[output]["value"], scope) == value, output


def test_the_app_the_emulator_and_the_bicep_default_to_the_same_model_and_api_version() -> None:
    from localdev.openai_emulator.config import DEFAULT_DEPLOYMENTS
    from processing.core.settings import DEFAULT_API_VERSION, DEFAULT_DEPLOYMENT

    text = MAIN.read_text(encoding="utf-8")
    model = re.search(r"^param openAiModelName string = '([^']+)'", text, re.MULTILINE)
    api = re.search(r"^param openAiApiVersion string = '([^']+)'", text, re.MULTILINE)
    assert model and api
    # azd names the deployment after the model when openAiDeploymentName is empty (its default).
    assert re.search(r"^param openAiDeploymentName string = ''", text, re.MULTILINE)
    assert model.group(1) == DEFAULT_DEPLOYMENT == DEFAULT_DEPLOYMENTS[0]
    assert api.group(1) == DEFAULT_API_VERSION
