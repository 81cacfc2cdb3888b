"""The bases of Rowsmith's checkov Bicep checks: each check is one instance, configured where it is made.

- `RowsmithCheck`: checkov's constructor arguments in one place. A check class says what it
  applies to (`resource_types`, `category`); its instance gets the id and the name.
- `LiteralPropertyCheck`: demands literal values at a property of the resource itself.
- `TemplateCheck`: for checks that need the resources around this one (rowsmith_template).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import rowsmith_template as tmpl
from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class RowsmithCheck(BaseResourceCheck):
    resource_types: tuple[str, ...] = ()
    category: CheckCategories = CheckCategories.GENERAL_SECURITY

    def __init__(self, check_id: str, name: str) -> None:
        # checkov registers the check here: making the instance is what loads it.
        super().__init__(name=name, id=check_id, categories=(self.category,), supported_resources=self.resource_types)


def _same(a: Any, b: Any) -> bool:
    # `True == 1` in Python; a Bicep bool and int are different things.
    return type(a) is type(b) and a == b


class LiteralPropertyCheck(RowsmithCheck):
    """PASSED only when `properties.<prop>` (dotted) holds one of `allowed` as a literal.

    pycep renders a parameter reference or an expression as a string or a dict, never as a
    bool, so a bool check fails unless the template says `true`/`false` itself. The name is
    `subject` followed by what is demanded, so it cannot say something else than the check.
    """

    def __init__(
        self,
        check_id: str,
        resource_type: str,
        prop: str,
        allowed: Sequence[Any],
        subject: str,
        *,
        category: CheckCategories = CheckCategories.GENERAL_SECURITY,
    ) -> None:
        self.resource_types = (resource_type,)
        self.category = category
        self.property_path = ("properties", *prop.split("."))
        self.allowed_values = tuple(allowed)
        demand = f"{prop}: {json.dumps(allowed[0])}" if len(allowed) == 1 else prop
        super().__init__(check_id, f"{subject} ({demand})")

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["/".join(self.property_path)]
        value = tmpl.lookup(conf, *self.property_path)
        if any(_same(value, ok) for ok in self.allowed_values):
            return CheckResult.PASSED
        return CheckResult.FAILED


class TemplateCheck(RowsmithCheck):
    """A check that reads the whole template: subclasses judge a `rowsmith_template.Scanned`.

    `evaluated` names the keys checkov reports as evaluated. A resource pycep does not see
    in the file fails: nothing about it can be proven.
    """

    evaluated: tuple[str, ...] = ()

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = list(self.evaluated)
        scan = tmpl.scanned(self.entity_path)
        return CheckResult.PASSED if scan is not None and self.passes(scan) else CheckResult.FAILED

    def passes(self, scan: tmpl.Scanned) -> bool:
        raise NotImplementedError
