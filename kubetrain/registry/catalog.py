"""Browse a store: list an experiment's versions, show one, compare two (README "Versions")."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetrain.registry.aliases import RESERVED, list_aliases, resolve
from kubetrain.registry.signing import SIGNATURE, signature_status
from kubetrain.store import LATEST, PART_SUFFIX, ArtifactStore, StoreError, validate_name

Scores = dict[str, dict[str, tuple[float, float]]]  # model → metric → (mean, std)


def scores_of(manifest: Mapping[str, Any]) -> Scores:
    """model → metric → (mean, std) of the cross-validation the manifest records."""
    scores: Scores = {}
    models = manifest.get("models")
    for model, entry in (models if isinstance(models, Mapping) else {}).items():
        cv = entry.get("cv") if isinstance(entry, Mapping) else None
        scores[str(model)] = {
            str(metric): (float(stats.get("mean", math.nan)), float(stats.get("std", math.nan)))
            for metric, stats in (cv if isinstance(cv, Mapping) else {}).items()
            if isinstance(stats, Mapping)
        }
    return scores


def _section(manifest: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = manifest.get(name)
    return value if isinstance(value, Mapping) else {}


def _data_fingerprint(manifest: Mapping[str, Any]) -> str:
    data = manifest.get("data")
    return str(data.get("sha256", "")) if isinstance(data, Mapping) else ""


@dataclass(frozen=True)
class VersionRow:
    """One complete version as `list` shows it."""

    version: str
    created: str
    data_sha256: str
    scores: Scores
    pointers: list[str]  # the aliases (as @name) and LATEST naming it
    signed: bool


@dataclass(frozen=True)
class Listing:
    """An experiment's complete versions (newest first) and its incomplete leftovers."""

    experiment: str
    rows: list[VersionRow]
    incomplete: list[str]
    total: int = 0
    aliases: dict[str, str] = field(default_factory=dict)


def version_candidates(store: ArtifactStore, experiment: str) -> list[str]:
    """Every entry of the experiment folder that may be a version, complete or not."""
    validate_name("experiment", experiment)
    if not store.backend.exists(experiment):
        return []
    names = []
    for entry in store.backend.listdir(experiment):
        if entry in RESERVED or entry.endswith(PART_SUFFIX):
            continue
        try:
            names.append(validate_name("version", entry))
        except StoreError:
            continue  # hidden probes and foreign files are not versions
    return sorted(names)


def list_experiment(store: ArtifactStore, experiment: str, limit: int = 50) -> Listing:
    """The newest `limit` complete versions with scores and pointers; incomplete ones apart."""
    if limit < 1:
        raise StoreError(f"limit must be at least 1, got {limit}; pass how many versions to show")
    complete = store.list_versions(experiment)
    incomplete = sorted(set(version_candidates(store, experiment)) - set(complete))
    aliases = list_aliases(store, experiment)
    latest = store.latest(experiment)
    pointers: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        pointers.setdefault(version, []).append(f"@{alias}")
    if latest is not None:
        pointers.setdefault(latest, []).append(LATEST)
    rows = []
    for version in sorted(complete, reverse=True)[:limit]:
        manifest = store.read_manifest(experiment, version)
        rows.append(
            VersionRow(
                version=version,
                created=str(manifest.get("created", "")),
                data_sha256=_data_fingerprint(manifest),
                scores=scores_of(manifest),
                pointers=pointers.get(version, []),
                signed=SIGNATURE in manifest,
            )
        )
    return Listing(experiment, rows, incomplete, total=len(complete), aliases=aliases)


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def score_columns(rows: Sequence[VersionRow]) -> list[tuple[str, str]]:
    """Every (model, metric) any of the rows has, in a stable order."""
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        for model, metrics in row.scores.items():
            for metric in metrics:
                seen[(model, metric)] = None
    return sorted(seen)


def listing_table(listing: Listing) -> list[dict[str, str]]:
    """Rows for a table artifact or the terminal: one per version, one column per model metric."""
    columns = score_columns(listing.rows)
    table = []
    for row in listing.rows:
        record = {
            "version": row.version,
            "created": row.created[:19].replace("T", " "),
            "data sha256": row.data_sha256[:12],
            "pointers": ", ".join(row.pointers),
            "signed": "yes" if row.signed else "no",
        }
        for model, metric in columns:
            stats = row.scores.get(model, {}).get(metric)
            record[f"{model} {metric}"] = _mean_std(*stats) if stats else ""
        table.append(record)
    return table


def format_table(rows: Sequence[Mapping[str, str]], empty: str = "(none)") -> str:
    """A plain-text table with aligned columns."""
    if not rows:
        return empty
    header = list(rows[0])
    cells = [header, *([str(r.get(h, "")) for h in header] for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def listing_text(listing: Listing) -> str:
    """What `kubetrain versions list` prints."""
    shown = len(listing.rows)
    head = f"{listing.experiment}: {listing.total} complete version(s)"
    if shown < listing.total:
        head += f", newest {shown} shown"
    if listing.incomplete:
        head += (
            f"; {len(listing.incomplete)} incomplete (no manifest: unfinished or interrupted "
            "publishes, never read; `versions prune` removes old ones)"
        )
    return head + "\n" + format_table(listing_table(listing), empty="(no complete version)")


@dataclass(frozen=True)
class Shown:
    """One version: its name, manifest and a readable description."""

    version: str
    manifest: dict[str, Any]
    text: str


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_version(store: ArtifactStore, experiment: str, ref: str | None) -> Shown:
    """A readable account of one version's manifest (ref: version, @alias or LATEST)."""
    version = resolve(store, experiment, ref)
    manifest = store.read_manifest(experiment, version)
    pointers = [f"@{a}" for a, v in sorted(list_aliases(store, experiment).items()) if v == version]
    if store.latest(experiment) == version:
        pointers.append(LATEST)
    data = _section(manifest, "data")
    lines = [
        f"version     {version}",
        f"experiment  {experiment}",
        f"created     {manifest.get('created', '?')}",
        f"flow run    {manifest.get('flow_run_id') or '-'}",
        f"pointers    {', '.join(pointers) or '-'}",
        f"signature   {signature_status(manifest)}",
        "",
        "data",
        f"  source    {data.get('source', '?')}",
        f"  sha256    {data.get('sha256', '?')}",
        f"  rows      {data.get('rows', '?')}, target {data.get('target', '?')!r}",
        "",
        "scores (cross-validation mean ± std)",
    ]
    for model, metrics in scores_of(manifest).items():
        for metric, (mean, std) in metrics.items():
            lines.append(f"  {model:<10} {metric:<18} {_mean_std(mean, std)}")
    parameters = manifest.get("parameters")
    lines += ["", "parameters"]
    for name, value in (parameters if isinstance(parameters, Mapping) else {}).items():
        lines.append(f"  {name:<14} {_short(value)}")
    environment = manifest.get("environment")
    if isinstance(environment, Mapping):
        lines += ["", "environment"]
        lines += [f"  {name:<14} {value}" for name, value in environment.items()]
    files = manifest.get("files")
    lines += ["", "files"]
    for name, entry in (files if isinstance(files, Mapping) else {}).items():
        lines.append(f"  {name:<24} {entry.get('bytes', '?'):>10}  {entry.get('sha256', '')[:16]}…")
    return Shown(version=version, manifest=manifest, text="\n".join(lines))


@dataclass(frozen=True)
class ScoreChange:
    """One model's metric in two versions (None where a version lacks it)."""

    model: str
    metric: str
    old: float | None
    new: float | None

    @property
    def change(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


@dataclass(frozen=True)
class VersionDiff:
    """What differs between two versions: parameters, data and scores."""

    experiment: str
    old: str
    new: str
    parameters: list[tuple[str, Any, Any]]  # (name, old value, new value) of changed ones
    old_data: str
    new_data: str
    scores: list[ScoreChange]

    def score_rows(self) -> list[dict[str, str]]:
        def fmt(value: float | None, sign: bool = False) -> str:
            return "-" if value is None else (f"{value:+.4f}" if sign else f"{value:.4f}")

        return [
            {
                "model": s.model,
                "metric": s.metric,
                self.old: fmt(s.old),
                self.new: fmt(s.new),
                "change": fmt(s.change, sign=True),
            }
            for s in self.scores
        ]

    def parameter_rows(self) -> list[dict[str, str]]:
        return [
            {"parameter": name, self.old: _short(a), self.new: _short(b)}
            for name, a, b in self.parameters
        ]

    @property
    def text(self) -> str:
        same = self.old_data == self.new_data
        data = f"data        {'same' if same else 'DIFFERENT'}: {self.old_data[:16]}…"
        if not same:
            data += f" → {self.new_data[:16]}…"
        return "\n".join(
            [
                f"{self.experiment}: {self.old} → {self.new}",
                data,
                "",
                "parameters",
                format_table(self.parameter_rows(), empty="(no parameter changed)"),
                "",
                "scores (cross-validation means)",
                format_table(self.score_rows()),
            ]
        )


_MISSING = object()


def diff_versions(store: ArtifactStore, experiment: str, old_ref: str, new_ref: str) -> VersionDiff:
    """Compare two versions (each a version, @alias or LATEST)."""
    old, new = resolve(store, experiment, old_ref), resolve(store, experiment, new_ref)
    a, b = store.read_manifest(experiment, old), store.read_manifest(experiment, new)
    pa, pb = _section(a, "parameters"), _section(b, "parameters")
    parameters = [
        (name, pa.get(name), pb.get(name))
        for name in sorted(set(pa) | set(pb))
        if pa.get(name, _MISSING) != pb.get(name, _MISSING)
    ]
    sa, sb = scores_of(a), scores_of(b)
    pairs = sorted({(m, k) for s in (sa, sb) for m, metrics in s.items() for k in metrics})
    scores = [
        ScoreChange(
            model,
            metric,
            sa.get(model, {}).get(metric, (None, None))[0],
            sb.get(model, {}).get(metric, (None, None))[0],
        )
        for model, metric in pairs
    ]
    return VersionDiff(
        experiment, old, new, parameters, _data_fingerprint(a), _data_fingerprint(b), scores
    )
