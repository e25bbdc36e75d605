"""The flows on schedules (`vitals flows serve`) and run once (`vitals flows run`).

`vitals flows serve` serves five deployments with cron schedules from
settings (UTC): groups hourly (`VITALS_GROUPS_CRON`), export nightly to
region EU (`VITALS_EXPORT_CRON`), retention daily (`VITALS_RETENTION_CRON`),
the purge of past exports every 10 minutes (`VITALS_PURGE_CRON`; the flows
runner is where the exports are, so it works off the purge queue that
erasure, research withdrawal and residency correction fill), and statistics
for region EU weekly (`VITALS_STATISTICS_CRON`). Audiences and disclosures
are deployments without a schedule, run with parameters (`group`,
`partner_id`) from the Prefect UI or `prefect deployment run`.
With `PREFECT_API_URL` they register with that Prefect server; without it
Prefect starts its temporary local server (see flows/common.py).

`vitals flows run NAME` runs a flow now. With `PREFECT_API_URL` set (or
`--prefect`) it runs as a Prefect flow run, recorded on the server, with the
tasks' retries; otherwise it runs the same work directly, without starting
a temporary Prefect server for one run.
"""

from __future__ import annotations

import sys
from typing import Any

import prefect
from prefect.deployments.runner import RunnerDeployment

from core.errors import InputError
from core.settings import Settings
from flows import common
from flows.audience import audience_flow, run_audience
from flows.disclosure import disclosure_flow, run_disclosure
from flows.export import export_flow, run_export
from flows.groups import derive_groups, groups_flow
from flows.purge import purge_flow, purge_from_settings
from flows.retention import retention_flow, run_retention_from_settings
from flows.statistics import MIN_SUBJECTS, run_statistics_from_settings, statistics_flow

FLOWS = ("groups", "export", "retention", "purge", "audience", "disclosure", "statistics")


def _deployment(flow_: Any, **kwargs: Any) -> RunnerDeployment:
    deployment = flow_.to_deployment(**kwargs)
    assert isinstance(deployment, RunnerDeployment)  # called synchronously, not awaited
    return deployment


def deployments(settings: Settings) -> list[RunnerDeployment]:
    schedule = {"actor": "prefect:schedule"}
    return [
        _deployment(
            groups_flow, name="vitals-groups-hourly", cron=settings.groups_cron, parameters=schedule
        ),
        _deployment(
            export_flow,
            name="vitals-export-nightly",
            cron=settings.export_cron,
            parameters={"region": "EU", **schedule},
        ),
        _deployment(
            retention_flow,
            name="vitals-retention-daily",
            cron=settings.retention_cron,
            parameters=schedule,
        ),
        _deployment(purge_flow, name="vitals-purge", cron=settings.purge_cron, parameters=schedule),
        _deployment(
            statistics_flow,
            name="vitals-statistics-weekly",
            cron=settings.statistics_cron,
            parameters={"region": "EU", "period": "week", **schedule},
        ),
        # On demand, with parameters: group (and partner_id) / partner_id.
        _deployment(audience_flow, name="vitals-audience", parameters={"actor": "prefect"}),
        _deployment(disclosure_flow, name="vitals-disclosure", parameters={"actor": "prefect"}),
    ]


def serve(settings: Settings) -> None:
    """Serve the scheduled deployments until interrupted."""
    settings.require_database_url()
    settings.require_secret_key()
    prefect.serve(*deployments(settings))


def run_flow(
    name: str,
    settings: Settings,
    *,
    region: str = "EU",
    via_prefect: bool | None = None,
    actor: str = "cli",
    group: str | None = None,
    partner: str | None = None,
    min_subjects: int = MIN_SUBJECTS,
    period: str = "week",
    epsilon: float | None = None,
) -> dict[str, Any]:
    """Run one flow now; the export shows a progress bar on stderr."""
    if name not in FLOWS:
        raise InputError("unknown_flow", f"flow must be one of {', '.join(FLOWS)}")
    url = settings.require_database_url()
    use_prefect = common.prefect_server_configured() if via_prefect is None else via_prefect
    if name == "statistics":
        params: dict[str, Any] = {
            "region": region,
            "min_subjects": min_subjects,
            "period": period,
            "epsilon": epsilon,
            "actor": actor,
        }
        return (
            statistics_flow(**params)
            if use_prefect
            else run_statistics_from_settings(settings, **params)
        )
    if name == "audience":
        if not group:
            raise InputError("invalid_group", "--group is required")
        if use_prefect:
            return audience_flow(group=group, partner_id=partner, actor=actor)
        master = settings.require_secret_key()
        return run_audience(url, master, settings.export_dir, group, partner, actor=actor)
    if name == "disclosure":
        if not partner:
            raise InputError("invalid_partner", "--partner is required")
        if use_prefect:
            return disclosure_flow(partner_id=partner, actor=actor)
        master = settings.require_secret_key()
        return run_disclosure(url, master, settings.export_dir, partner, actor=actor)
    if name == "groups":
        return groups_flow(actor=actor) if use_prefect else derive_groups(url, actor=actor)
    if name == "purge":
        return purge_flow(actor=actor) if use_prefect else purge_from_settings(actor)
    if name == "retention":
        return (
            retention_flow(actor=actor)
            if use_prefect
            else run_retention_from_settings(settings, actor)
        )

    master = settings.require_secret_key()
    if use_prefect:  # Prefect logs the flow's progress itself
        return export_flow(region=region, actor=actor)

    from tqdm import tqdm

    with tqdm(
        desc=f"export {region}", unit=" rows", unit_scale=True, file=sys.stderr, disable=False
    ) as bar:

        def advance(rows: int) -> None:
            bar.update(rows)

        return run_export(url, master, settings.export_dir, region, actor=actor, progress=advance)
