"""The whole template a checkov resource check is looking at, for checks that need more
than the one resource: the resource a role assignment or a diagnostic setting is scoped
to, the lifecycle policy of a blob service's account.

checkov hands a check only the resource's own configuration, with variables already
substituted. The check's `entity_path` (`<file>:<type>:<symbol>`) names the file and the
resource, so these helpers parse that file again with pycep (the parser checkov uses) and
read the raw template. pycep renders an identifier and a string literal alike, so a
string that names a variable is looked up among the variables.

It imports nothing of checkov, so tests/infra/bicep.py reads templates with the same
parser and the same resource walk (as `infra.policies.rowsmith_template`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycep import BicepParser

_MISSING = object()


@functools.cache
def _parser() -> BicepParser:
    return BicepParser()


@functools.cache
def template(path: str) -> dict[str, Any]:
    return _parser().parse(file_path=Path(path))


def entity(entity_path: str) -> tuple[str, str]:
    """(file, resource symbol) of a check's entity_path `<file>:<type>:<symbol>`."""
    path, _type, symbol = entity_path.rsplit(":", 2)
    return path, symbol


def unwrap(config: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """(body, condition, loop) of a resource's config: pycep nests `if` and `for` one level deeper."""
    if "loop_type" in config:
        return config["config"], config.get("condition"), config["loop_type"]
    if set(config) == {"condition", "config"}:
        return config["config"], config["condition"], None
    return config, None, None


def resources(tpl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """symbol -> {"type", "api_version", "existing", "body", "condition", "loop"}."""
    found = {}
    for symbol, res in (tpl.get("resources") or {}).items():
        body, condition, loop = unwrap(res["config"])
        found[symbol] = {
            "type": res["type"],
            "api_version": res.get("api_version"),
            "existing": res["existing"],
            "body": body,
            "condition": condition,
            "loop": loop,
        }
    return found


@dataclass(frozen=True)
class Scanned:
    """The resource a check is looking at (`symbol`), among the others of its template."""

    tpl: dict[str, Any]
    found: dict[str, dict[str, Any]]
    symbol: str

    @property
    def resource(self) -> dict[str, Any]:
        return self.found[self.symbol]

    def related(self, res: dict[str, Any], key: str) -> dict[str, Any] | None:
        """The resource that `res` names in `scope:` or `parent:` (`key`), if this template has it."""
        return self.found.get(symbol_of(res["body"].get(key)) or "")

    def deployed(self, type_: str) -> Iterator[dict[str, Any]]:
        """Resources of `type_` this template always deploys: an `existing` or `if` one proves nothing."""
        for res in self.found.values():
            if res["type"] == type_ and not res["existing"] and res["condition"] is None:
                yield res

    def deployed_on(self, type_: str, key: str, symbol: str | None) -> Iterator[dict[str, Any]]:
        """Those of `deployed(type_)` whose `scope:` or `parent:` (`key`) is the resource `symbol`."""
        return (res for res in self.deployed(type_) if symbol and symbol_of(res["body"].get(key)) == symbol)


def scanned(entity_path: str) -> Scanned | None:
    """The template behind a check's entity_path; None when pycep does not see the resource."""
    path, symbol = entity(entity_path)
    tpl = template(path)
    found = resources(tpl)
    return Scanned(tpl, found, symbol) if symbol in found else None


def symbol_of(expr: Any) -> str | None:
    """The resource symbol in `scope:` or `parent:`: `name` or `name[i]` (a resource loop)."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict):
        operator = expr.get("operator") or {}
        if operator.get("type") == "index_accessor":
            operand = operator["operands"]["operand_1"]
            return operand if isinstance(operand, str) else None
    return None


def resolve(tpl: dict[str, Any], value: Any) -> Any:
    """A variable's literal value when `value` names a variable; else `value` unchanged."""
    variables = tpl.get("variables") or {}
    if isinstance(value, str) and value in variables:
        return resolve(tpl, variables[value]["value"])
    return value


def role_definition_guid(tpl: dict[str, Any], body: dict[str, Any]) -> str | None:
    """The role GUID of `subscriptionResourceId('...roleDefinitions', <guid or variable>)`."""
    role = lookup(body, "properties", "roleDefinitionId", "function")
    if not isinstance(role, dict) or role.get("type") != "subscription_resource_id":
        return None
    params = role.get("parameters") or {}
    if params.get("resource_type") != "Microsoft.Authorization/roleDefinitions":
        return None
    guid = resolve(tpl, params.get("resource_name_1"))
    return guid.lower() if isinstance(guid, str) else None


def lookup(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def missing(value: Any) -> bool:
    return value is _MISSING
