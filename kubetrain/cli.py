"""The `kubetrain` command: one subcommand per flow, generated from the flow itself.

Each command's options come from the flow's signature (types, defaults, Literal choices) and its
help text from the flow docstring's `Args:` section, the same text the Prefect UI form shows: one
source of truth for the CLI, the form and the docs. Flows are loaded by entrypoint from the
project folder, as Prefect's own workers load them, so this module imports no flow at import time
(`kubetrain --help` stays fast) and the library keeps pointing one way.

Lists are given comma-separated (`--models lda,nn`), mappings as JSON. A user error prints
`error: <message>` and exits 1; nothing else is printed in its place.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

from kubetrain.errors import KubetrainError

PROJECT_ROOT_ENV = "KUBETRAIN_PROJECT_DIR"


@dataclass(frozen=True)
class FlowCommand:
    """A CLI command backed by a flow: where it lives and how its result is shown."""

    name: str
    entrypoint: str
    show: Callable[[Any], str]


def _show_train(outcome: Any) -> str:
    return f"published {outcome.location}\n{outcome.table}"


def _show_predict(outcome: Any) -> str:
    lines = [f"version {outcome.version}: predictions in {outcome.predictions}"]
    lines += [f"  accuracy {m}: {a:.6f}" for m, a in (outcome.accuracy or {}).items()]
    return "\n".join(lines)


def _show_text(result: Any) -> str:
    return str(result.text)


def _show_report(result: Any) -> str:
    # The cluster flows return their report; its text is what a person reads.
    if isinstance(result, dict) and isinstance(result.get("text"), str):
        return str(result["text"])
    return _show_json(result)


def _show_json(result: Any) -> str:
    return json.dumps(result, indent=2, default=str)


GROUPS: dict[str | None, list[FlowCommand]] = {
    None: [
        FlowCommand("train", "flows/train.py:train", _show_train),
        FlowCommand("predict", "flows/predict.py:predict", _show_predict),
    ],
    "cluster": [
        FlowCommand("bootstrap", "flows/cluster.py:bootstrap_cluster", _show_report),
        FlowCommand("join", "flows/cluster.py:join_workers", _show_report),
        FlowCommand("teardown", "flows/cluster.py:teardown_cluster", _show_report),
        FlowCommand("plan", "flows/cluster.py:plan_cluster", str),
    ],
    "work-pool": [
        FlowCommand("ensure", "flows/work_pool.py:ensure_work_pool", _show_json),
    ],
    "versions": [
        FlowCommand(name, f"flows/versions.py:versions_{name}", _show_text)
        for name in ("list", "show", "diff", "promote", "history", "prune")
    ],
}
GROUP_HELP = {
    "cluster": "Build, grow and tear down a kubeadm cluster over SSH.",
    "work-pool": "The Prefect Kubernetes work pool and what it needs in the cluster.",
    "versions": "Browse, compare, promote and prune published versions on a store.",
}


def project_root() -> Path:
    """The folder holding flows/: $KUBETRAIN_PROJECT_DIR, this checkout, or the working dir."""
    from kubetrain.settings import get_settings

    candidates = [get_settings().project_dir, Path(__file__).resolve().parents[1], Path.cwd()]
    for candidate in candidates:
        if candidate and (Path(candidate) / "flows").is_dir():
            return Path(candidate)
    raise typer.BadParameter(
        f"cannot find the project's flows/ folder; run kubetrain from the project folder or set "
        f"{PROJECT_ROOT_ENV}"
    )


def load_flow(entrypoint: str) -> Any:
    """The flow object at `path.py:name` below the project root (imported on demand)."""
    root = project_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(root / entrypoint))


def _docstring_help(fn: Callable[..., Any]) -> dict[str, str]:
    from prefect.utilities.callables import parameter_docstrings

    return {k: " ".join(v.split()) for k, v in parameter_docstrings(fn.__doc__).items()}


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _option_for(annotation: Any) -> tuple[Any, Callable[[Any], Any], str]:
    """(CLI type, converter to the flow's type, extra help) for one flow parameter."""
    if get_origin(annotation) is Annotated:  # constraints (pydantic Field) are the flow's job
        annotation = get_args(annotation)[0]
    inner, _optional = _strip_optional(annotation)
    origin = get_origin(inner)
    if origin is list:
        (item,) = get_args(inner) or (str,)
        choices = get_args(item) if get_origin(item) is Literal else ()
        extra = " Comma-separated" + (f": any of {', '.join(choices)}." if choices else ".")
        return str, _split_list, extra
    if origin is dict or inner is dict:
        return str, _parse_json_object, " JSON object."
    if inner is Path:
        return str, Path, ""
    return inner, lambda value: value, ""


def _split_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return value
    return [item.strip() for item in str(value).split(",") if item.strip()]


def _parse_json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter('expected a JSON object, e.g. {"nn": {"max_iter": 300}}')
    return parsed


def _cli_default(default: Any) -> Any:
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    if isinstance(default, dict):
        return json.dumps(default)
    if isinstance(default, Path):
        return str(default)
    return default


def build_command(spec: FlowCommand) -> Callable[..., None]:
    """A typer command function whose options mirror the flow's parameters."""
    flow = load_flow(spec.entrypoint)
    signature = inspect.signature(flow.fn, eval_str=True)
    helps = _docstring_help(flow.fn)
    converters: dict[str, Callable[[Any], Any]] = {}
    parameters = []
    for name, parameter in signature.parameters.items():
        cli_type, convert, extra = _option_for(parameter.annotation)
        converters[name] = convert
        text = (helps.get(name, "") + extra).strip()
        default = parameter.default
        required = default is inspect.Parameter.empty
        option = typer.Option(..., help=text) if required else typer.Option(help=text)
        if _strip_optional(parameter.annotation)[1]:
            cli_type = cli_type | None
        # Built at run time from the flow's signature: mypy cannot see through it.
        annotation = typing.cast(Any, typing.Annotated)[cli_type, option]
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=_cli_default(default),
                annotation=annotation,
            )
        )

    def command(**values: Any) -> None:
        arguments = {name: converters[name](value) for name, value in values.items()}
        try:
            result = flow(**arguments)
        except KubetrainError as error:
            typer.echo(f"error: {str(error) or type(error).__name__}", err=True)
            raise typer.Exit(1) from None
        except Exception as error:  # the flow run has logged the traceback already
            typer.echo(f"error: {type(error).__name__}: {error}", err=True)
            raise typer.Exit(1) from None
        typer.echo(spec.show(result))

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__name__ = spec.name.replace("-", "_")
    command.__doc__ = (flow.fn.__doc__ or spec.name).split("\n\n")[0]
    return command


def write_template() -> None:
    """Regenerate deployments/base-job-template.json from prefect-kubernetes' default."""
    from kubetrain.k8s import TEMPLATE_PATH, derive_base_job_template

    TEMPLATE_PATH.write_text(json.dumps(derive_base_job_template(), indent=2) + "\n")
    typer.echo(f"wrote {TEMPLATE_PATH}; review the diff before committing it")


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The whole `kubetrain` command tree; only the flow of the command in argv is loaded."""
    app = typer.Typer(
        name="kubetrain",
        help="Train scikit-learn models as Prefect flows; publish them, verified, over SFTP.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    wanted = _requested(sys.argv[1:] if argv is None else argv)
    for group, specs in GROUPS.items():
        target = app
        if group is not None:
            target = typer.Typer(help=GROUP_HELP[group], no_args_is_help=True)
            app.add_typer(target, name=group)
        if group == "work-pool":
            target.command(name="write-template")(write_template)
        for spec in specs:
            if wanted is None or wanted == (group, spec.name):
                target.command(name=spec.name)(build_command(spec))
            else:
                target.command(name=spec.name, help=_summary(spec))(_placeholder)
    return app


def _summary(spec: FlowCommand) -> str:
    # The first docstring line of the flow, read without importing Prefect.
    import ast

    path, _, name = spec.entrypoint.partition(":")
    tree = ast.parse((project_root() / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return (ast.get_docstring(node) or name).split("\n")[0]
    return name


def _placeholder() -> None:  # replaced by the real command when it is the one requested
    raise typer.Exit(2)


def _requested(argv: list[str]) -> tuple[str | None, str] | None:
    """The (group, command) the arguments ask for, if any; None means show only summaries."""
    words = [arg for arg in argv if not arg.startswith("-")]
    if not words:
        return None
    if words[0] in GROUPS and len(words) > 1:
        return (words[0], words[1])
    if words[0] not in GROUPS:
        return (None, words[0])
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`argv` defaults to the process's arguments)."""
    build_app(argv)(args=argv, prog_name="kubetrain")


if __name__ == "__main__":
    main()
