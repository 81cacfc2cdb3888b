"""The table of figures, as text for the terminal and as Markdown for docs/benchmarks.md.

`python -m benchmarks.report [RESULTS_JSON [DETAILS_JSON]]` prints the Markdown table of a
finished run (default: benchmarks/results.json and benchmarks/out/details.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_DIR

ORDER = (
    "ingest_ratio",
    "rss_delta_mb",
    "quota_utilisation",
    "cpu_ms_per_row",
    "storage_tx_per_row_1",
    "storage_tx_per_row_20",
    "budget_storage_tx_per_row",
    "finalize_seconds",
    "finalize_peak_rss_mb",
)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def verdict(row: dict[str, Any]) -> str:
    passed = row.get("passed")
    if row.get("target") is None:
        return "-"
    return "pass" if passed else "FAIL"


def rows_of(results: list[dict[str, Any]], extra: dict[str, dict[str, Any]] | None = None) -> list[list[str]]:
    by_name = {r["name"]: {**r, **(extra or {}).get(r["name"], {})} for r in results}
    names = [n for n in ORDER if n in by_name] + [n for n in by_name if n not in ORDER]
    table = []
    for name in names:
        r = by_name[name]
        baseline = _num(r.get("baseline"))
        if r.get("baseline_unit"):
            baseline += f" {r['baseline_unit']}"
        target = r.get("target") or "-"
        table.append([name, _num(r["value"]), r["unit"], baseline, target, verdict(r), r.get("note", "")])
    return table


HEAD = ["name", "value", "unit", "baseline", "target", "result", "note"]


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEAD, *table]) for i in range(len(HEAD) - 1)]
    lines = []
    for row in [HEAD, *table]:
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if row is HEAD:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def markdown_table(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for row in table:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def machine_line(details: dict[str, Any]) -> str:
    m = details.get("machine", {})
    return (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB; {m.get('os', '')}; "
        f"Python {m.get('python', '?')}, Node {m.get('node', '?')}, Azurite {m.get('azurite', '?')}; "
        f"load average at start {m.get('loadavg_at_start', '?')}; run {details.get('run', {}).get('started', '?')} "
        f"({details.get('run', {}).get('mode', '?')}, {details.get('run', {}).get('seconds', '?')} s)"
    )


def breakdown(details: dict[str, Any]) -> str:
    """Storage requests per row by operation, for the jobs and their floors."""
    jobs = details.get("jobs", {})
    columns = [
        (key, label)
        for key, label in (
            ("job_1", "job, 1/msg"),
            ("bare_1", "floor, 1/msg"),
            ("job_20", "job, 20/msg"),
            ("bare_20", "floor, 20/msg"),
            ("quota", "quota job"),
        )
        if key in jobs
    ]
    if not columns:
        return ""
    ops: list[str] = []
    for key, _ in columns:
        for op in jobs[key].get("tx_per_row_by_operation", {}):
            if op not in ops:
                ops.append(op)
    lines = ["| operation resource | " + " | ".join(label for _, label in columns) + " |"]
    lines.append("|" + "---|" * (len(columns) + 1))
    for op in ops:
        cells = [_num(jobs[key].get("tx_per_row_by_operation", {}).get(op)) for key, _ in columns]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    totals = [_num(jobs[key].get("storage_tx_per_row")) for key, _ in columns]
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return "\n".join(lines)


def components(details: dict[str, Any]) -> str:
    jobs = details.get("jobs", {})
    keys = [k for k in ("job_1", "job_20", "quota") if k in jobs]
    if not keys:
        return ""
    names: list[str] = []
    for key in keys:
        for name in jobs[key].get("tx_by_component_per_row", {}):
            if name not in names:
                names.append(name)
    lines = ["| part | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name in names:
        cells = [_num(jobs[k]["tx_by_component_per_row"].get(name)) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: list[dict[str, Any]], details: dict[str, Any]) -> str:
    extra = details.get("results", {})
    parts = [f"Machine: {machine_line(details)}", "", markdown_table(rows_of(results, extra))]
    table = breakdown(details)
    if table:
        parts += ["", "Storage requests per row, by operation and resource:", "", table]
    table = components(details)
    if table:
        parts += ["", "Storage requests per row, by part of the app:", "", table]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results_path = Path(argv[0]) if argv else BENCH_DIR / "results.json"
    details_path = Path(argv[1]) if len(argv) > 1 else results_path.parent / "out" / "details.json"
    if not details_path.exists():
        details_path = results_path.parent / "details.json"
    results = json.loads(results_path.read_text())
    details = json.loads(details_path.read_text()) if details_path.exists() else {}
    print(markdown(results, details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
