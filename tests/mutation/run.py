"""Mutation testing of the core modules: run mutmut, then print the score per module and the
surviving mutants (`make mutation`; configuration in pyproject.toml [tool.mutmut]).

    python -m tests.mutation.run                  # every configured module
    python -m tests.mutation.run data inference   # only kubetrain.data and kubetrain.inference
    python -m tests.mutation.run --report         # only print what the last runs found
    python -m tests.mutation.run --report --markdown tests/mutation/SURVIVORS.md

Every survivor is printed with its reason from tests/mutation/survivors.toml (why it is
equivalent or not worth a test), or flagged NO REASON: then write a test, or record a reason.

Score = killed / (killed + survived + no tests + suspicious); a timeout counts as killed (the
mutant made the code hang). Naming modules re-runs all their mutants; `--retest-survivors`
re-runs only the survivors of the last run (after adding tests); `--resume` finishes an
interrupted run (same source). The run's wall time and the load average during it are printed
at the end: the machine may be shared, and load stretches the time.
Which tests mutation runs use, and why some are left out: tests/mutation/plugin.py.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO_ROOT = Path(__file__).resolve().parents[2]
REASONS = Path(__file__).with_name("survivors.toml")
MUTANTS = REPO_ROOT / "mutants"
KILLED = {"killed", "timeout", "caught by type check"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
NOT_COUNTED = {"skipped", "not checked", "check was interrupted by user"}


# Module -> the mutants that count for it. k8s: the job-template derivation only (its other
# functions are exercised by the Prefect-server tests); ssh: key, host-key and auth handling
# (remote command execution and Prefect Secret blocks are covered by the sshd and Prefect-server
# integration tests, not run here).
SCOPE = {
    "store.protocol": ["kubetrain.store.protocol.*"],
    "store.local": ["kubetrain.store.local.*"],
    "inference": ["kubetrain.inference.*"],
    "ssh": [
        f"kubetrain.ssh.{name}*"
        for name in (
            "xǁKeySourceǁ",
            "xǁ_RefuseUnknownHostǁ",
            "x__load_private_key__",
            "x__is_encrypted__",
            "x__parse_private_key__",
            "x_known_hosts_from_env__",
            "x__keyscan_hint__",
            "x_backoff_delay__",
            "x__is_transient__",
            "x__connect_once__",
            "x_connect__",
        )
    ],
    "data": ["kubetrain.data.*"],
    "training.engine": ["kubetrain.training.engine.*"],
    "k8s": [
        f"kubetrain.k8s.*{name}__mutmut_*"
        for name in (
            "x__string_var",
            "x_derive_base_job_template",
            "x_load_base_job_template",
            "x_load_environment",
            "x_template_for_environment",
            "x_check_job_variables",
        )
    ],
}


def in_scope(name: str, modules: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for m in modules for p in SCOPE[m])


def forget_survivors(modules: list[str]) -> list[str]:
    """Mark surviving mutants unchecked, so the next run tests them against the new tests."""
    forgotten = []
    for meta in MUTANTS.glob("kubetrain/**/*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        for name, code in codes.items():
            if status_by_exit_code[code] not in KILLED | NOT_COUNTED and in_scope(name, modules):
                codes[name] = None
                forgotten.append(name)
        meta.write_text(json.dumps(data))
    return forgotten


def unchecked(modules: list[str]) -> list[str]:
    """In-scope mutants without a result yet (an interrupted run), by name."""
    return [
        name
        for meta in MUTANTS.glob("kubetrain/**/*.py.meta")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()
        if code is None and in_scope(name, modules)
    ]


def refresh_copies() -> None:
    """mutmut copies tests/ and also_copy into mutants/ once; refresh them for new tests."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    for name in ["tests", "pyproject.toml", *config.get("also_copy", [])]:
        source, target = REPO_ROOT / name, MUTANTS / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=IGNORED)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_mutmut(patterns: list[str], children: int, load: list[float]) -> int:
    """Run mutmut; append the 1-minute load average to load every 30 s meanwhile."""
    if MUTANTS.is_dir():
        refresh_copies()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *patterns]
    with subprocess.Popen(command, cwd=REPO_ROOT) as process:
        while True:
            load.append(os.getloadavg()[0])
            try:
                return process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                continue


def reasons() -> list[tuple[str, str]]:
    """(mutant name pattern, why such survivors are equivalent or not worth a test)."""
    import tomllib

    entries = tomllib.loads(REASONS.read_text()).get("survivor", []) if REASONS.is_file() else []
    return [(str(e["mutants"]), str(e["reason"])) for e in entries]


def reason_for(name: str, known: list[tuple[str, str]]) -> str | None:
    return next((reason for pattern, reason in known if fnmatch.fnmatch(name, pattern)), None)


def change_of(name: str) -> str:
    """The mutant's changed lines, '-old / +new', from mutmut's copy of the source."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    module = name.split(".x")[0].replace("ǁ", "")
    path = REPO_ROOT.joinpath(*module.split(".")).with_suffix(".py")
    try:
        diff = get_diff_for_mutant(name, path=path.relative_to(REPO_ROOT))
    except Exception as error:  # a report without the diff beats no report
        return f"(diff unavailable: {type(error).__name__})"
    lines = diff.splitlines()[2:]
    changed = [line[0] + line[1:].strip() for line in lines if line[:1] in "+-"]
    return " / ".join(changed)


def results() -> dict[str, dict[str, str]]:
    """mutant name -> status, per module, from mutmut's meta files."""
    by_module: dict[str, dict[str, str]] = {}
    for meta in sorted(MUTANTS.glob("kubetrain/**/*.py.meta")):
        module = ".".join(meta.relative_to(MUTANTS).with_suffix("").with_suffix("").parts)
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        by_module[module.removesuffix(".__init__")] = {
            name: status_by_exit_code[code]
            for name, code in codes.items()
            if in_scope(name, list(SCOPE))
        }
    return by_module


def report(
    modules: list[str], fail_under: float, show_survivors: bool, markdown: Path | None = None
) -> int:
    by_module = results()
    if modules:
        wanted = tuple(f"kubetrain.{m}" for m in modules)
        by_module = {
            m: r
            for m, r in by_module.items()
            if m in wanted or m.startswith(tuple(f"{w}." for w in wanted))
        }
    if not by_module:
        print("no mutmut results in mutants/: run without --report first")
        return 2
    width = max(len(m) for m in by_module)
    table = [f"{'module':{width}}  mutants  killed  survived  no-tests  other  unchecked  score"]
    below = []
    all_survivors = []
    for module, statuses in by_module.items():
        counts = Counter(statuses.values())
        killed = sum(counts[s] for s in KILLED)
        counted = sum(n for s, n in counts.items() if s not in NOT_COUNTED)
        unchecked = sum(counts[s] for s in NOT_COUNTED)
        score = 100.0 * killed / counted if counted else float("nan")
        other = counted - killed - counts["survived"] - counts["no tests"]  # suspicious, killed -9
        table.append(
            f"{module:{width}}  {len(statuses):7}  {killed:6}  {counts['survived']:8}  "
            f"{counts['no tests']:8}  {other:5}  {unchecked:9}  {score:5.1f}%"
        )
        if counted and score < fail_under:
            below.append(module)
        all_survivors += [
            (name, status)
            for name, status in statuses.items()
            if status not in KILLED and status not in NOT_COUNTED
        ]
    print("\n".join(table))
    known = reasons()
    explained = [(name, status, reason_for(name, known)) for name, status in all_survivors]
    unexplained = [name for name, _, reason in explained if reason is None]
    if show_survivors and explained:
        print(f"\n{len(explained)} surviving mutants (see one: mutmut show <name>):")
        for name, status, reason in explained:
            print(f"  {name}  [{status}]  {reason or 'NO REASON: write a test or record one'}")
    if markdown:
        write_markdown(markdown, table, explained)
        print(f"\nwrote {markdown}")
    if unexplained:
        print(f"\n{len(unexplained)} survivors have no reason in {REASONS.name}")
    if below:
        print(f"\nbelow {fail_under:g}%: {', '.join(below)}")
        return 1
    return 0


def write_markdown(
    path: Path, table: list[str], survivors: list[tuple[str, str, str | None]]
) -> None:
    lines = [
        "# Mutation testing: score per module and every surviving mutant",
        "",
        "Generated by `python -m tests.mutation.run --report --markdown "
        f"{path.name}` from the last run's results; reasons come from {REASONS.name}.",
        "Scores count checked mutants only; `unchecked` ones have not been run (yet).",
        "",
        "```",
        *table,
        "```",
        "",
        f"## {len(survivors)} surviving mutants",
        "",
    ]
    by_reason: dict[str, list[tuple[str, str]]] = {}
    for name, status, reason in survivors:
        by_reason.setdefault(reason or "NO REASON RECORDED", []).append((name, status))
    for reason, names in by_reason.items():
        lines += [f"- **{reason}**"]
        for name, status in names:
            extra = "" if status == "survived" else f" [{status}]"
            lines += [f"  - `{name.removeprefix('kubetrain.')}`{extra}: `{change_of(name)}`"]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="e.g. data, inference, store.protocol, k8s")
    parser.add_argument("--report", action="store_true", help="print results, do not run")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--fail-under", type=float, default=0.0, help="minimum score, percent")
    parser.add_argument("--quiet", action="store_true", help="scores only, no survivor list")
    parser.add_argument("--markdown", type=Path, help="also write scores and survivors here")
    parser.add_argument(
        "--retest-survivors", action="store_true", help="re-run survivors (after adding tests)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="run only mutants an interrupted run left unchecked"
    )
    args = parser.parse_args()
    modules = args.modules or list(SCOPE)
    patterns = [p for m in modules for p in SCOPE[m]]
    if args.retest_survivors:
        patterns = forget_survivors(modules)  # only those: quicker than the whole scope
    elif args.resume:
        patterns = unchecked(modules)  # the source must be unchanged since the interrupted run
    started = time.monotonic()
    load: list[float] = []
    if not args.report and patterns:
        run_mutmut(patterns, args.children, load)
    code = report(modules, args.fail_under, not args.quiet, args.markdown)
    if load:
        print(
            f"\nwall time {(time.monotonic() - started) / 60:.1f} min with {args.children} "
            f"children on {os.cpu_count()} CPUs; 1-minute load average during the run: "
            f"mean {sum(load) / len(load):.1f}, max {max(load):.1f}"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
