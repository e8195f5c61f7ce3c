"""`tuner profile ...`: list, show, compare and export tuned profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tuner.cli.common import Json, emit_json, err, out, user_errors
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.profiles.profile import Profile

profile_app = typer.Typer(
    help="Find, show, compare and export tuned profiles. Exit codes: 0 done; 2 bad input.",
    no_args_is_help=True,
)

Dir = Annotated[Path, typer.Option("--dir", help="The profiles folder.")]
Gpu = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="auto (this machine's GPU; the closest GPU's profile when it has none, "
        "marked as such) or a GPU folder name such as nvidia-h100-80gb-hbm3.",
    ),
]
EngineFilter = Annotated[
    str | None, typer.Option("--engine", "-e", help="Only profiles of this engine.")
]
ModelFilter = Annotated[
    str | None, typer.Option("--model", "-m", help="Only profiles of this model (ref or slug).")
]
WorkloadFilter = Annotated[
    str | None, typer.Option("--workload", "-w", help="Only profiles of this workload.")
]
ProfileRef = Annotated[
    str | None,
    typer.Argument(
        help="A profile file, or its key <gpu>/<engine>/<model>--<workload> under --dir. "
        "Leave it out to look one up with --gpu (default auto) and the filters.",
        show_default=False,
    ),
]
DEFAULT_DIR = Path("profiles")


def load(
    ref: str | None,
    directory: Path,
    gpu: str | None,
    engine: str | None,
    model: str | None,
    workload: str | None,
) -> tuple[Path, Profile]:
    """The profile a command names, by file or key, or looked up (a warning when it is
    another GPU's)."""
    from tuner.profiles.store import find

    path, profile, warning = find(ref, directory, gpu, engine, model, workload)
    if warning:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    return path, profile


@profile_app.command("list")
def profile_list(
    directory: Dir = DEFAULT_DIR,
    gpu: Gpu = None,
    engine: EngineFilter = None,
    model: ModelFilter = None,
    workload: WorkloadFilter = None,
    json_: Json = False,
) -> None:
    """List the profiles of a profiles folder: all, or those for a GPU (--gpu auto: this one)."""
    from tuner.profiles.store import listing
    from tuner.report.terminal import profiles_table

    with user_errors():
        found = listing(directory, gpu, engine, model, workload)
    entries, closest = found.entries, found.closest
    if json_:
        emit_json([e.as_json(closest is not None) for e in entries])
        return
    if not entries:
        err.print(f"no profiles under {directory}")
        return
    if closest is not None:
        err.print(
            f"[yellow]no profile for this GPU; these are the closest GPU's ({closest}), "
            "measured on another GPU model[/]"
        )
    out.print(profiles_table([(str(e.path), e.profile or str(e.error)) for e in entries]))


@profile_app.command("show")
def profile_show(
    ref: ProfileRef = None,
    directory: Dir = DEFAULT_DIR,
    gpu: Gpu = None,
    engine: EngineFilter = None,
    model: ModelFilter = None,
    workload: WorkloadFilter = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Requests/s to serve: the replicas of the best configuration it takes, from "
            "the rate one replica sustained within the limits (a server engine's profile)."
        ),
    ] = None,
    traffic: Annotated[
        str | None,
        typer.Option(
            help="A workload you would serve with it (as --workload takes one): say how its "
            "traffic differs from what the profile was tuned on (lengths, prefix sharing, "
            "arrivals). Tokenized with the profile's model, which must be here.",
        ),
    ] = None,
    json_: Json = False,
) -> None:
    """Show one profile: named, or looked up for this machine's GPU."""
    from tuner.profiles.capacity import capacity_for
    from tuner.profiles.profile import traffic_differences
    from tuner.report.terminal import profile_table

    with user_errors():
        path, profile = load(ref, directory, gpu, engine, model, workload)
        differences = None if traffic is None else traffic_differences(profile, path, traffic)
        needed = None if rate is None else capacity_for(rate, profile, path)
    extra: dict[str, object] = {}
    if needed is not None:
        extra["capacity"] = needed.as_json()
    if differences is not None:
        extra["traffic_differences"] = differences
    if json_ and extra:
        found = {**profile.model_dump(mode="json"), **extra}
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    elif json_:
        sys.stdout.write(profile.model_dump_json(indent=2) + "\n")
    else:
        out.print(profile_table(profile))
        if needed is not None:
            unit = "CPU machine" if profile.gpu.slug == "cpu" else "GPU"
            out.print(escape(needed.text(profile.constraints, unit)))
        out.print(f"[dim]{path}[/]")
    if differences:
        err.print(
            f"[yellow]warning:[/] {escape(traffic or '')} is not the traffic {path} was tuned on "
            f"({escape('; '.join(differences))}): its figures may not hold for it",
            soft_wrap=True,
        )
    elif differences is not None:
        err.print(f"{escape(traffic or '')}: the traffic {path} was tuned on, in shape")


@profile_app.command("diff")
def profile_diff(
    a: Annotated[str, typer.Argument(help="A profile file or key.")],
    b: Annotated[str, typer.Argument(help="Another profile file or key.")],
    directory: Dir = DEFAULT_DIR,
    json_: Json = False,
) -> None:
    """Two profiles side by side: identity, knobs and figures (with B / A)."""
    from dataclasses import asdict

    from tuner.profiles.profile import read_profile
    from tuner.profiles.store import diff, resolve_profile
    from tuner.report.terminal import diff_table

    with user_errors():
        pa, pb = (read_profile(resolve_profile(ref, directory)) for ref in (a, b))
    rows = diff(pa, pb)
    if json_:
        emit_json([{**asdict(r), "differs": r.differs} for r in rows])
    else:
        out.print(diff_table(rows, pa.key, pb.key))


@profile_app.command("export")
def profile_export(
    ref: ProfileRef = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="vllm-args (flags for vllm serve), vllm-config (YAML for vllm serve --config), "
            "hf-kwargs (JSON for from_pretrained / generate / pipeline, or generate_batch's "
            "continuous batching config), hf-serve (a transformers serve command), env (shell "
            "variables), json.",
        ),
    ] = "json",
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
    pick: Annotated[
        str,
        typer.Option(
            help="Which configuration: best (the chosen one), or a point of the Pareto front of "
            "a several-objective profile: fastest (most output tok/s), most-efficient (fewest "
            "J per output token), or its index (0 = best on the first objective).",
        ),
    ] = "best",
    directory: Dir = DEFAULT_DIR,
    gpu: Gpu = None,
    engine: EngineFilter = None,
    model: ModelFilter = None,
    workload: WorkloadFilter = None,
) -> None:
    """Write a profile's best configuration (or a point of its front) in a form an engine or a
    deployment takes."""
    from tuner.profiles.formats import export

    with user_errors():
        _, profile = load(ref, directory, gpu, engine, model, workload)
        text = export(profile.pick(pick), fmt)
        if output is None:
            sys.stdout.write(text)
            return
        try:
            output.write_text(text)
        except OSError as exc:
            raise TunerError(f"cannot write {output}: {exc.strerror or exc}") from None
    err.print(f"{fmt} written: {output}")


@profile_app.command("schema")
def profile_schema() -> None:
    """Print the JSON Schema of profiles (as shipped in tuner/schemas/)."""
    from tuner.profiles.profile import schema_text

    sys.stdout.write(schema_text())
