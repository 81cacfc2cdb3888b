"""A checkov Bicep check that demands literal values at a property path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

_MISSING = object()


def _lookup(conf: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(conf, dict) or key not in conf:
            return _MISSING
        conf = conf[key]
    return conf


def _same(a: Any, b: Any) -> bool:
    # `True == 1` in Python; a Bicep bool and int are different things.
    return type(a) is type(b) and a == b


class LiteralPropertyCheck(BaseResourceCheck):
    """PASSED only when `path` holds one of `allowed` as a literal.

    pycep renders a parameter reference or an expression as a string or a dict, never as a
    bool, so a bool check fails unless the template says `true`/`false` itself.
    """

    def __init__(
        self,
        *,
        check_id: str,
        name: str,
        resource_types: Iterable[str],
        path: Sequence[str],
        allowed: Sequence[Any],
        category: CheckCategories = CheckCategories.GENERAL_SECURITY,
    ) -> None:
        self.property_path = tuple(path)
        self.allowed_values = tuple(allowed)
        super().__init__(name=name, id=check_id, categories=(category,), supported_resources=tuple(resource_types))

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["/".join(self.property_path)]
        value = _lookup(conf, self.property_path)
        if any(_same(value, ok) for ok in self.allowed_values):
            return CheckResult.PASSED
        return CheckResult.FAILED
