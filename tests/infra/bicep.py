"""Reading the Bicep in infra/ without a Bicep compiler.

Two parsers, two jobs: tree-sitter-bicep knows current Bicep fully and is the syntax gate;
pycep-parser (the version checkov uses) turns a file into JSON-like dicts for assertions,
read and walked by infra/policies/rowsmith_template.py, the module our checkov policies use.
pycep renders an identifier and a string literal alike (both are Python strings), so
`resolve` looks a bare string up among the template's variables and parameters first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

from infra.policies import rowsmith_template

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

Template = dict[str, Any]


def bicep_files(root: Path = INFRA) -> list[Path]:
    return sorted(root.rglob("*.bicep"))


# ---- syntax gate (tree-sitter) ----


@functools.cache
def _ts_parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def _bad_nodes(node: Node) -> Iterator[Node]:
    if node.is_error or node.is_missing:
        yield node
        return  # one report per broken region is enough
    for child in node.children:
        yield from _bad_nodes(child)


def syntax_errors(path: Path) -> list[str]:
    """`file:line:col: ...` for every ERROR or MISSING node; empty when the file is valid Bicep."""
    tree = _ts_parser().parse(path.read_bytes())
    problems = []
    for node in _bad_nodes(tree.root_node):
        line, col = node.start_point
        what = f"missing {node.type}" if node.is_missing else "syntax error"
        problems.append(f"{path}:{line + 1}:{col + 1}: {what}")
    if tree.root_node.has_error and not problems:
        problems.append(f"{path}:1:1: syntax error")
    return problems


# ---- assertions (pycep) ----


def parse(path: Path) -> Template:
    return rowsmith_template.template(str(path.resolve()))


@dataclass(frozen=True)
class Resource:
    file: Path
    symbol: str
    type: str
    api_version: str
    existing: bool
    body: dict[str, Any]  # the object after `=`, without a condition or loop around it
    condition: Any = None
    loop: dict[str, Any] | None = None


def resources(path: Path, type_: str | None = None) -> list[Resource]:
    found = rowsmith_template.resources(parse(path))
    return [Resource(path, symbol, **res) for symbol, res in found.items() if type_ in (None, res["type"])]


def all_resources(type_: str | None = None) -> list[Resource]:
    return [r for f in bicep_files() for r in resources(f, type_)]


def only(items: list[Any], what: str) -> Any:
    assert len(items) == 1, f"expected exactly one {what}, found {len(items)}"
    return items[0]


def module(name: str, template: Path = MAIN) -> dict[str, Any]:
    modules = parse(template).get("modules", {})
    assert name in modules, f"{template.name} has no module {name!r} (has {sorted(modules)})"
    return modules[name]


def module_file(name: str, template: Path = MAIN) -> Path:
    return (template.parent / module(name, template)["detail"]["path"]).resolve()


def variables(path: Path) -> dict[str, Any]:
    return {name: var["value"] for name, var in parse(path).get("variables", {}).items()}


def dig(obj: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(key, int):
            assert isinstance(obj, list) and len(obj) > key, f"no item {key} in {obj!r}"
        else:
            assert isinstance(obj, dict) and key in obj, f"no {key!r} in {obj!r}"
        obj = obj[key]
    return obj


# ---- evaluating the simple expressions our templates use for names ----


def resolve(expr: Any, scope: Mapping[str, Any]) -> Any:
    """Evaluate literals, variable/parameter references, arrays and concat() as Python values.

    `scope` maps names to already known values (a template's variables, or a module's
    parameters as its caller passes them). Anything else is returned unchanged.
    """
    if isinstance(expr, str):
        if expr in scope:
            return resolve(scope[expr], scope)
        return _INTERPOLATION.sub(lambda m: _scalar(m, scope), expr)
    if isinstance(expr, list):
        return [resolve(item, scope) for item in expr]
    if isinstance(expr, dict) and "function" in expr and expr["function"].get("type") == "concat":
        parts = [resolve(arg, scope) for arg in expr["function"]["parameters"].values()]
        assert all(isinstance(p, list) for p in parts), f"concat of non-arrays: {parts!r}"
        return [item for part in parts for item in part]
    if isinstance(expr, dict) and not set(expr) & {"function", "operator"}:
        return {key: resolve(value, scope) for key, value in expr.items()}
    return expr


_INTERPOLATION = re.compile(r"\$\{(\w+)\}")


def _scalar(match: re.Match[str], scope: Mapping[str, Any]) -> str:
    # Substitute `${name}` only when it resolves to a plain value; keep it otherwise.
    value = resolve(match.group(1), scope) if match.group(1) in scope else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else match.group(0)


def module_params(name: str, template: Path = MAIN) -> dict[str, Any]:
    """A module's parameters as `template` passes them, with its variables resolved."""
    scope = variables(template)
    return {key: resolve(value, scope) for key, value in module(name, template)["config"]["params"].items()}


def module_scope(name: str, template: Path = MAIN) -> dict[str, Any]:
    """Names visible inside module `name`: its parameter defaults, then what the caller passes."""
    path = module_file(name, template)
    defaults = {key: param["default"] for key, param in parse(path).get("parameters", {}).items() if "default" in param}
    return {**defaults, **module_params(name, template), **variables(path)}


def is_ref(expr: Any, *path: str) -> bool:
    """True when `expr` is the property chain `a.b.c` (pycep's nested property_accessor)."""
    if len(path) == 1:
        return expr == path[0]
    if not (isinstance(expr, dict) and rowsmith_template.lookup(expr, "operator", "type") == "property_accessor"):
        return False
    operands = expr["operator"]["operands"]
    return operands["operand_1"] == path[0] and is_ref(operands["operand_2"], *path[1:])
