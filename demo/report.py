"""The report `vitals demo` ends with: counts from the database, a DuckDB query on
the EU export, and a PNG chart of the ingest rate and refusals by reason."""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from store import demo as demo_store


def build_report(
    db_url: str,
    groups: dict[str, Any],
    exports: dict[str, Any],
    since: datetime,
    ingest_seconds: float,
    sent: int,
    workdir: Path,
    withdrawal_at: float,
) -> dict[str, Any]:
    counts = demo_store.report_counts(db_url, since)
    accepted = counts["accepted"]
    by_reason: dict[str, int] = counts["refused_by_reason"]
    by_transport: dict[str, int] = counts["refused_by_transport"]
    group_counts: dict[str, int] = counts["groups"]
    per_bucket: list[tuple[datetime, int]] = counts["stored_per_second"]
    refused_bucket: dict[datetime, int] = counts["refused_per_second"]
    query = demo_store.duckdb_export_summary(exports["EU"]["path"])
    duck: list[tuple[Any, ...]] = []
    with contextlib.suppress(ImportError):
        import duckdb

        duck = duckdb.sql(query).fetchall()  # type: ignore[union-attr]
    chart = workdir / "report.png"
    chart_png(chart, per_bucket, refused_bucket, by_reason, since, withdrawal_at)
    return {
        "sent": sent,
        "accepted": accepted,
        "refused": sum(by_reason.values()),
        "refused_by_reason": by_reason,
        "refused_by_transport": by_transport,
        "ingest_seconds": round(ingest_seconds, 1),
        "groups": group_counts,
        "groups_run": groups,
        "exports": {
            r: {k: e[k] for k in ("export_id", "path", "rows", "subjects")}
            for r, e in exports.items()
        },
        "duckdb_query": query,
        "duckdb_result": duck[:10],
        "chart": str(chart),
    }


def chart_png(
    path: Path,
    per_bucket: list[tuple[datetime, int]],
    refused_bucket: dict[datetime, int],
    by_reason: dict[str, int],
    since: datetime,
    withdrawal_at: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [(b - since).total_seconds() for b, _ in per_bucket]
    left.plot(xs, [n * 60 for _, n in per_bucket], marker=".", label="stored")
    left.plot(
        [(b - since).total_seconds() for b in sorted(refused_bucket)],
        [refused_bucket[b] * 60 for b in sorted(refused_bucket)],
        marker="x",
        label="refused",
    )
    left.axvline(withdrawal_at, color="grey", linestyle="--", label="consent withdrawal")
    left.set_xlabel("seconds since the simulator started")
    left.set_ylabel("readings per minute (1 s bins)")
    left.set_title("Ingest rate")
    left.legend()
    reasons = list(by_reason)
    bars = right.barh(reasons, [by_reason[r] for r in reasons], color="#c0504d")
    right.bar_label(bars, padding=3)
    right.set_xscale("log")
    right.set_xlabel("readings refused (log scale)")
    right.set_title("Refusals by reason")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_report(report: dict[str, Any]) -> None:
    lines = [
        "",
        f"vitals demo finished in {report['seconds']} s",
        f"  readings sent {report['sent']:,}: stored {report['accepted']:,}, "
        f"refused {report['refused']:,} (ingest {report['ingest_seconds']} s)",
        "  refused by reason: "
        + ", ".join(f"{k} {v}" for k, v in report["refused_by_reason"].items()),
        "  groups: " + ", ".join(f"{k} {v}" for k, v in report["groups"].items()),
    ]
    for region, e in report["exports"].items():
        lines.append(
            f"  export {region}: {e['rows']:,} rows, {e['subjects']} subjects → {e['path']}"
        )
    p = report.get("purposes")
    if p:
        lines += [
            f"  marketing audience of {p['group']}: {p['audience']['members']} members "
            f"(own use), {p['partner_audience']['members']} for partner "
            f"{p['partner_id']} → {p['audience']['path']}",
            f"  disclosure to the partner: {p['disclosure']['rows']:,} rows of "
            f"{p['disclosure']['subjects']} subjects → {p['disclosure']['path']}",
            f"  statistics (EU, weekly, K=10): {p['statistics']['cells']} cells published, "
            f"{p['statistics']['suppressed_cells']} suppressed → {p['statistics']['path']}",
        ]
    lines += ["  try it with DuckDB:", f"    {report['duckdb_query']}"]
    lines += [f"    {row}" for row in report["duckdb_result"][:5]]
    lines.append(f"  chart: {report['chart']}")
    print("\n".join(lines), file=sys.stderr, flush=True)
