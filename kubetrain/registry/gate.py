"""Quality gate: move an alias to a new version only if it is not worse than the one it names.

Compared on one model's cross-validation mean of one metric (every catalog metric is
higher-is-better); `max_drop` is how far below the current score the new one may fall and still
pass. A version that fails is still published (LATEST moves); only the alias stays.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kubetrain.errors import UserError
from kubetrain.locations import quote_value
from kubetrain.registry.aliases import AliasEvent, promote, read_alias, validate_alias
from kubetrain.registry.catalog import scores_of
from kubetrain.store import MANIFEST, ArtifactStore, StoreError


class GateConfigError(UserError):
    """The quality-gate parameters do not fit the run's models or metrics."""


@dataclass(frozen=True)
class GateConfig:
    """Which alias to move and what must not get worse."""

    alias: str
    model: str
    metric: str
    max_drop: float


def check_gate(
    promote_to: str | None,
    model: str | None,
    metric: str,
    max_drop: float,
    models: Sequence[str],
    metrics: Sequence[str],
) -> GateConfig | None:
    """The gate of a train run (None without `promote_to`), checked before any training."""
    if not promote_to:
        return None
    try:
        validate_alias(promote_to)
    except StoreError as error:
        raise GateConfigError(f"promote_to: {error}") from None
    chosen = model or (models[0] if models else "")
    if chosen not in models:
        raise GateConfigError(
            f"gate_model {quote_value(chosen)} is not one of the trained models "
            f"{list(models)}; choose one of them"
        )
    if metric not in metrics and metric != "accuracy":  # accuracy is always computed
        raise GateConfigError(
            f"gate_metric {metric!r} is not computed by this run (metrics {list(metrics)}); "
            "add it to metrics or gate on accuracy"
        )
    if not math.isfinite(max_drop) or max_drop < 0:
        raise GateConfigError(
            f"gate_max_drop must be a finite number >= 0, got {max_drop!r}: it is how far the "
            "score may fall below the current one (0 = not worse)"
        )
    return GateConfig(promote_to, chosen, metric, float(max_drop))


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, with both numbers (None where there is nothing to compare)."""

    alias: str
    model: str
    metric: str
    max_drop: float
    candidate: str
    candidate_score: float | None
    current: str | None
    current_score: float | None
    promoted: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(manifest: Mapping[str, Any], model: str, metric: str) -> float | None:
    stats = scores_of(manifest).get(model, {}).get(metric)
    return stats[0] if stats and math.isfinite(stats[0]) else None


def decide(
    config: GateConfig,
    candidate: str,
    candidate_manifest: Mapping[str, Any],
    current: str | None,
    current_manifest: Mapping[str, Any] | None,
) -> GateDecision:
    """Pass when there is no current version, or candidate >= current - max_drop."""
    new = _score(candidate_manifest, config.model, config.metric)
    old = (
        _score(current_manifest, config.model, config.metric)
        if current_manifest is not None
        else None
    )
    what = f"{config.model} {config.metric}"
    if new is None:
        promoted, reason = False, f"the new version has no finite {what} score"
    elif current is None or current_manifest is None:
        promoted, reason = True, f"@{config.alias} named no complete version yet"
    elif current == candidate:
        promoted, reason = True, f"@{config.alias} already names this version"
    elif old is None:
        promoted, reason = True, f"the current version {current} has no {what} score to beat"
    elif new >= old - config.max_drop:
        promoted = True
        reason = f"{what} {new:.4f} >= {old:.4f} - allowed drop {config.max_drop:g}"
    else:
        promoted = False
        reason = f"{what} {new:.4f} < {old:.4f} - allowed drop {config.max_drop:g}: worse"
    return GateDecision(
        alias=config.alias,
        model=config.model,
        metric=config.metric,
        max_drop=config.max_drop,
        candidate=candidate,
        candidate_score=new,
        current=current,
        current_score=old,
        promoted=promoted,
        reason=reason,
    )


def run_gate(
    store: ArtifactStore, experiment: str, candidate: str, config: GateConfig, who: str
) -> tuple[GateDecision, AliasEvent | None]:
    """Compare the published candidate with the alias's version; promote it if it passes."""
    candidate_manifest = store.read_manifest(experiment, candidate)
    current = read_alias(store, experiment, config.alias)
    current_manifest = None
    if current is not None and store.backend.exists(posixpath.join(experiment, current, MANIFEST)):
        current_manifest = store.read_manifest(experiment, current)
    decision = decide(config, candidate, candidate_manifest, current, current_manifest)
    event = None
    if decision.promoted and current != candidate:
        why = f"quality gate: {decision.reason}"
        event = promote(store, experiment, config.alias, candidate, who, why)
    return decision, event
