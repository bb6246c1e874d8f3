"""Tasks of the fit cache and of fan-out: reuse and keep fits, start children, hand back results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from math import inf
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from kubetrain.errors import UserError
from kubetrain.k8s.limits import flow_timeout_seconds
from kubetrain.settings import get_settings
from kubetrain.store import IntegrityError, open_store
from kubetrain.training.engine import FitOutcome, describe_fit
from kubetrain.training.fanout import (
    Child,
    FanOutError,
    find_fit_deployment,
    stop_children,
    wait_for_children,
)
from kubetrain.training.handoff import Entry, clear_staging, read_outcome, write_outcome
from tasks.retries import IO_RETRIES

Fit = tuple[str, int | None]
# How long a stopped fan-out waits for its cancelled children to stop before cleaning up: well
# inside the 30 s a worker (or Kubernetes) gives a cancelled run before killing it.
SETTLE_SECONDS = 15.0


class DataChangedError(UserError):
    """A child fit read other data than its parent fingerprinted."""


@task(name="reuse-fits", cache_policy=NO_CACHE, **IO_RETRIES)
def reuse_cached_fits(
    destination: str, experiment: str, keys: Mapping[Fit, str]
) -> list[FitOutcome]:
    """Finished fits with these keys from the store's fit cache, checksum-verified first."""
    log = get_run_logger()
    found = []
    with open_store(destination) as store:
        for (model, fold), key in keys.items():
            try:
                outcome = read_outcome(store, Entry.cached(experiment, key), model, fold)
            except IntegrityError as error:  # never loaded: fitted again instead
                log.warning("not reusing %s: %s", describe_fit(model, fold), error)
                continue
            if outcome is not None:
                log.info("reused %s from the fit cache", describe_fit(model, fold))
                found.append(outcome)
    return found


@task(name="cache-fits", cache_policy=NO_CACHE, **IO_RETRIES)
def cache_fits(
    destination: str, experiment: str, keys: Mapping[Fit, str], outcomes: Sequence[FitOutcome]
) -> None:
    """Keep finished fits in the store's fit cache, so a re-run reuses them."""
    with open_store(destination) as store:
        for outcome in outcomes:
            key = keys[(outcome.model, outcome.fold)]
            # When it was cached: `versions prune` deletes entries older than keep_days.
            written = datetime.now(UTC).isoformat(timespec="seconds")
            write_outcome(store, Entry.cached(experiment, key), outcome, key=key, written=written)


@task(name="check-data", cache_policy=NO_CACHE)
def check_data(actual: str, expected: str, source: str) -> None:
    """Fail unless this child read exactly the data its parent fingerprinted."""
    if actual != expected:
        raise DataChangedError(
            f"the source changed: {source[:200]} has sha256 {actual[:12]}… now, the parent run "
            f"read {expected[:12]}…, so this fit would not match the others; keep the data fixed "
            "while a run trains, then run train again"
        )


@task(name="stage-fit", cache_policy=NO_CACHE, **IO_RETRIES)
def stage_fit(destination: str, experiment: str, version: str, outcome: FitOutcome) -> None:
    """Hand this fit's outcome to the parent run through the store's staging area."""
    entry = Entry.staged(experiment, version, outcome.model, outcome.fold)
    with open_store(destination) as store:
        write_outcome(store, entry, outcome)


@task(name="fan-out", cache_policy=NO_CACHE)
def fan_out(children: Sequence[Child], parent_flow_run_id: Any) -> None:
    """Start one train-fit child run per fit on this run's work pool and wait for them all."""
    log = get_run_logger()
    deployment = find_fit_deployment(parent_flow_run_id)
    try:
        for child in children:
            child.start(deployment)
        log.info("started %d child run(s) of %s", len(children), deployment)
        settings = get_settings()
        # Bounded by KUBETRAIN_FANOUT_TIMEOUT and, on Kubernetes, by this run's own timeout.
        timeout = min(settings.fanout_timeout, flow_timeout_seconds(settings.job_deadline) or inf)
        wait_for_children(children, deployment, timeout=timeout, log=log)
    except BaseException:
        # A failed child, the timeout, or this run stopped (Prefect turns the SIGTERM of a
        # cancellation into a BaseException): the rest is not needed, and cancelled children may
        # still be writing, so they are stopped before the staging area is cleared.
        stop_children(children, log, settle=SETTLE_SECONDS)
        raise


@task(name="gather-fits", cache_policy=NO_CACHE, **IO_RETRIES)
def gather_fits(
    destination: str, experiment: str, version: str, fits: Sequence[Fit]
) -> list[FitOutcome]:
    """Every child's outcome from the staging area, checksum-verified before it is loaded."""
    outcomes = []
    with open_store(destination) as store:
        for model, fold in fits:
            outcome = read_outcome(
                store, Entry.staged(experiment, version, model, fold), model, fold
            )
            if outcome is None:
                raise FanOutError(
                    f"{describe_fit(model, fold)} completed but left no result in "
                    f"{store.url}/{experiment}; the store may have lost it: run train again"
                )
            outcomes.append(outcome)
    return outcomes


@task(name="clear-staging", cache_policy=NO_CACHE, **IO_RETRIES)
def clear_staged(destination: str, experiment: str, version: str) -> None:
    """Remove what this run's children staged (after gathering it, or after a failure)."""
    with open_store(destination) as store:
        clear_staging(store, experiment, version)
