#!/usr/bin/env python3
"""Write local.settings.json for `func start` against a deployment, from azd's environment.

    azd env get-values | python infra/scripts/local_settings_from_azd.py
    python infra/scripts/local_settings_from_azd.py --env-file .azure/<env>/.env --force

Only identity-based settings are written: service URIs and names, nothing secret. Locally
the Functions host and the app authenticate as you (`az login` / `azd auth login`), with
the roles infra/core/rbac.bicep gives the deploying user. Standard library only, so it
runs with any Python 3.9+.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

CONNECTION = "AzureWebJobsStorage"  # processing/core/layout.py STORAGE_CONNECTION

# azd output -> local setting. The URIs form the identity-based storage connection; no
# `__credential` is set, so the host uses your developer login rather than a managed
# identity that does not exist on your machine.
REQUIRED = {
    "AZURE_STORAGE_BLOB_ENDPOINT": f"{CONNECTION}__blobServiceUri",
    "AZURE_STORAGE_QUEUE_ENDPOINT": f"{CONNECTION}__queueServiceUri",
    "AZURE_OPENAI_ENDPOINT": "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT": "AZURE_OPENAI_DEPLOYMENT",
}
OPTIONAL = {
    "AZURE_OPENAI_API_VERSION": "AZURE_OPENAI_API_VERSION",
}
# Core Tools needs the worker runtime locally; on Flex Consumption it is in functionAppConfig.
FIXED = {"FUNCTIONS_WORKER_RUNTIME": "python"}

KEY_MARKERS = ("AccountKey=", "SharedAccessSignature=", "SharedAccessKey=")


class SettingsError(Exception):
    pass


def parse_env(lines: Iterable[str]) -> dict[str, str]:
    """Parse `azd env get-values` output: KEY="value" lines (double quotes, backslash escapes)."""
    values: dict[str, str] = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values


def local_settings(env: dict[str, str]) -> dict[str, object]:
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise SettingsError(
            f"missing {', '.join(missing)} in the azd environment: run `azd provision` (or `azd up`) first"
        )
    values = dict(FIXED)
    for source, target in {**REQUIRED, **OPTIONAL}.items():
        if env.get(source):
            values[target] = env[source]
    for name, value in values.items():
        # Defence in depth: the deployment has no keys, and neither may this file.
        if any(marker.lower() in value.lower() for marker in KEY_MARKERS):
            raise SettingsError(f"{name} looks like it carries a key; refusing to write it")
    return {"IsEncrypted": False, "Values": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="read this file instead of standard input")
    parser.add_argument("--output", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)

    if args.output.exists() and not args.force:
        print(f"{args.output} exists; pass --force to replace it", file=sys.stderr)
        return 1
    source = args.env_file.read_text().splitlines() if args.env_file else sys.stdin
    try:
        settings = local_settings(parse_env(source))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.output.write_text(json.dumps(settings, indent=2) + "\n")
    print(f"wrote {args.output} ({len(settings['Values'])} settings, no secrets)")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
