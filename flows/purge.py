"""The scheduled purge of past exports (`vitals-purge`, served by `vitals flows
serve` every `VITALS_PURGE_CRON`): the flows runner is where the exports are,
so it works off the purge queue that erasure, research withdrawal and
residency correction fill. The work is `rights.purge.purge_exports`, the same
function `vitals export purge` and `POST /v1/exports/purge` call.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.settings import Settings
from flows import common
from rights.purge import purge_exports, raise_if_failed


def purge_from_settings(actor: str) -> dict[str, Any]:
    settings = Settings()
    return purge_exports(
        settings.require_database_url(), settings.require_secret_key(), actor=actor
    )


@task(
    name="purge-exports",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def purge_task(actor: str) -> dict[str, Any]:
    return purge_from_settings(actor)


@flow(
    name="vitals-purge",
    description="Rewrite past exports without erased, research-withdrawn or re-resident subjects.",
)
def purge_flow(actor: str = "prefect") -> dict[str, Any]:
    result = purge_task(actor)
    get_run_logger().info(
        "purge: %s exports rewritten, %s failed, %s entries pending",
        len(result["exports_purged"]),
        len(result["failed"]),
        result["pending"]["entries"],
    )
    return raise_if_failed(result)
