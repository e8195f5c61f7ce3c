"""The profile store: `profiles/<gpu-slug>/<engine>/<model-slug>--<workload>.json`.

Finds profiles by path, by key, or for the GPU of this machine; where this GPU has none, offers
those of the closest GPU model (same architecture first, then nearest memory), marked as such.
Compares two profiles knob by knob and figure by figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError
from tuner.fmt import fmt_value
from tuner.hardware.machine import Hardware, detect_hardware, slugify
from tuner.hardware.records import gpu_record
from tuner.profiles.profile import Profile, find_profiles, read_profile


@dataclass(frozen=True)
class Entry:
    """A profile file of the store, read, or the one line saying why it could not be."""

    path: Path
    profile: Profile | None
    error: str | None = None

    def as_json(self, closest: bool) -> dict[str, object]:
        """What `tuner profile list --json` shows of it (`closest`: another GPU's profile)."""
        p = self.profile
        if p is None:
            return {"path": str(self.path), "error": self.error}
        return {
            "path": str(self.path),
            "key": p.key,
            "best_output_tokens_per_s": p.best.measurement
            and p.best.measurement.output_tokens_per_s.median,
            "speedup": p.speedup,
            "created_at": p.created_at,
            "closest_gpu": closest,
        }


@dataclass(frozen=True)
class Lookup:
    """Profiles found for a GPU; `closest` is set when they are another GPU's, the nearest."""

    gpu_slug: str
    entries: list[Entry]
    closest: str | None = None


def read_store(root: Path) -> list[Entry]:
    """Every profile under `root`; an unreadable one is kept with its reason."""
    entries = []
    for path in find_profiles(root):
        try:
            entries.append(Entry(path, read_profile(path)))
        except TunerError as exc:
            entries.append(Entry(path, None, str(exc)))
    return entries


def resolve_profile(ref: str, root: Path) -> Path:
    """A profile file from a path or a key (`<gpu>/<engine>/<model>--<workload>`) under `root`."""
    path = Path(ref)
    if path.suffix == ".json" or path.exists():
        return path
    keyed = root / f"{ref}.json"
    if keyed.is_file():
        return keyed
    raise TunerError(f"no profile {ref!r} (neither a file nor a key under {root})")


def matches(p: Profile, engine: str | None, model: str | None, workload: str | None) -> bool:
    """Whether a profile is for this engine, model (reference or slug) and workload."""
    return (
        (engine is None or p.engine.name == engine)
        and (model is None or model in (p.model.ref, p.model.slug, slugify(model)))
        and (workload is None or p.workload.name == workload)
    )


def _distance(p: Profile, hardware: Hardware) -> tuple[int, float]:
    """How far a profile's GPU is from this machine's: architecture first, then memory."""
    here = gpu_record(hardware)
    arch = (p.gpu.compute_capability or "").split(".")[0]
    same_arch = arch != "" and arch == (here.compute_capability or "").split(".")[0]
    memory = abs((p.gpu.memory_mib or 0) - (here.memory_mib or 0))
    return (0 if same_arch else 1, memory)


def for_machine(
    entries: Sequence[Entry],
    hardware: Hardware,
    *,
    engine: str | None = None,
    model: str | None = None,
    workload: str | None = None,
) -> Lookup:
    """The profiles for this machine's GPU model, or else those of the closest GPU model.

    A machine without a GPU takes the `cpu` profiles only: a GPU's figures say nothing of a CPU.
    """
    slug = hardware.slug if hardware.gpus else "cpu"
    readable = [
        e for e in entries if e.profile is not None and matches(e.profile, engine, model, workload)
    ]
    mine = [e for e in readable if e.profile and e.profile.gpu.slug == slug]
    if mine or not hardware.gpus:
        return Lookup(slug, mine)
    others = [e for e in readable if e.profile and e.profile.gpu.slug != "cpu"]
    if not others:
        return Lookup(slug, [])
    best = min(others, key=lambda e: _distance(e.profile, hardware))  # type: ignore[arg-type]
    closest = best.profile.gpu.slug  # type: ignore[union-attr]
    return Lookup(slug, [e for e in others if e.profile.gpu.slug == closest], closest)  # type: ignore[union-attr]


def lookup(
    root: Path,
    gpu: str,
    engine: str | None = None,
    model: str | None = None,
    workload: str | None = None,
) -> Lookup:
    """The profiles under `root` for a GPU: this machine's (`auto`, or the closest GPU's where
    it has none) or a GPU folder's, such as `nvidia-h100-80gb-hbm3`."""
    entries = read_store(root)
    if gpu == "auto":
        return for_machine(
            entries, detect_hardware(), engine=engine, model=model, workload=workload
        )
    chosen = [
        e
        for e in entries
        if e.profile and e.profile.gpu.slug == gpu and matches(e.profile, engine, model, workload)
    ]
    return Lookup(gpu, chosen)


def listing(
    root: Path,
    gpu: str | None,
    engine: str | None = None,
    model: str | None = None,
    workload: str | None = None,
) -> Lookup:
    """What `tuner profile list` shows: every profile that matches (unreadable ones too), or
    those `lookup` finds for a GPU; one line when a GPU has none."""
    if gpu is None:
        entries = [
            e
            for e in read_store(root)
            if e.profile is None or matches(e.profile, engine, model, workload)
        ]
        return Lookup("", entries)
    found = lookup(root, gpu, engine, model, workload)
    if not found.entries:
        raise TunerError(f"no profiles for {found.gpu_slug} under {root}")
    return found


def find(
    ref: str | None,
    root: Path,
    gpu: str | None = None,
    engine: str | None = None,
    model: str | None = None,
    workload: str | None = None,
) -> tuple[Path, Profile, str | None]:
    """The profile a command names, by file or key, or else looked up (for `gpu`, default
    this machine's), with a warning when it is another GPU's; one line when there is none."""
    if ref is not None:
        if gpu is not None:
            raise TunerError("name a profile or look one up with --gpu, not both")
        path = resolve_profile(ref, root)
        profile = read_profile(path)
        check_profile_engine(profile, path, engine)
        return path, profile, None
    return pick(lookup(root, gpu or "auto", engine, model, workload), detect_hardware())


def pick(lookup: Lookup, hardware: Hardware) -> tuple[Path, Profile, str | None]:
    """The one profile a lookup found, and a warning when it is another GPU's; else one line."""
    if not lookup.entries:
        what = hardware.gpu_name if hardware.gpus else "this machine (no GPU)"
        raise TunerError(
            f"no profile for {what} (profiles/{lookup.gpu_slug}/) that matches; "
            "tune one with tuner tune, or name a profile file"
        )
    if len(lookup.entries) > 1:
        keys = ", ".join(e.profile.key for e in lookup.entries if e.profile)
        raise TunerError(
            f"{len(lookup.entries)} profiles match ({keys}); narrow with --engine, --model "
            "or --workload"
        )
    entry = lookup.entries[0]
    assert entry.profile is not None
    warning = None
    if lookup.closest is not None:
        g = entry.profile.gpu
        warning = (
            f"no profile for {hardware.gpu_name}; using the closest GPU's, {g.name} "
            f"({g.memory_mib or 0:,} MiB, compute {g.compute_capability}): re-tune here to be sure"
        )
    return entry.path, entry.profile, warning


def check_profile_engine(profile: Profile, path: Path, engine: str | None) -> None:
    """One line when a profile is for another engine than the one asked for."""
    if engine is not None and profile.engine.name != engine:
        raise TunerError(f"{path} is a profile for engine {profile.engine.name}, not {engine}")


# -- diff ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of a diff: a knob or a figure in both profiles, and whether it differs."""

    section: str
    name: str
    a: str
    b: str
    ratio: float | None = None

    @property
    def differs(self) -> bool:
        return self.a != self.b


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 10 else f"{value:,.1f}"
    return fmt_value(value)  # type: ignore[arg-type]


def figures(p: Profile) -> dict[str, float | None]:
    """The figures a diff compares, in their units."""
    m = p.best.measurement
    e = m.energy if m else None
    base = p.baseline.measurement if p.baseline else None
    return {
        "output tok/s": m.output_tokens_per_s.median if m else None,
        "cv": m.output_tokens_per_s.cv if m else None,
        "J / output token": e.joules_per_output_token.median if e else None,
        "avg power W": e.avg_power_w.median if e else None,
        "peak memory MiB": e.peak_memory_mib if e else None,
        "baseline tok/s": base.output_tokens_per_s.median if base else None,
        "speed-up": p.speedup,
        "trials": float(p.trials.total),
        "trials wall s": p.trials.wall_s,
    }


def diff(a: Profile, b: Profile) -> list[Row]:
    """Identity, knobs and figures of two profiles side by side; figures carry b / a."""
    rows = [
        Row("identity", "gpu", a.gpu.name, b.gpu.name),
        Row("identity", "engine", a.engine.name, b.engine.name),
        Row("identity", "model", a.model.ref, b.model.ref),
        Row("identity", "workload", a.workload.name, b.workload.name),
        Row(
            "identity",
            "requests x out",
            f"{a.workload.requests} x {a.workload.mean_output_tokens:g}",
            f"{b.workload.requests} x {b.workload.mean_output_tokens:g}",
        ),
        Row("identity", "tuner", a.tuner_version, b.tuner_version),
        Row("identity", "created", f"{a.created_at:%Y-%m-%d}", f"{b.created_at:%Y-%m-%d}"),
    ]
    names = list(a.best.knobs) + [n for n in b.best.knobs if n not in a.best.knobs]
    for name in names:
        rows.append(Row("knob", name, _fmt(a.best.knobs.get(name)), _fmt(b.best.knobs.get(name))))
    fa, fb = figures(a), figures(b)
    for name, va in fa.items():
        vb = fb[name]
        ratio = vb / va if va and vb is not None else None
        rows.append(Row("figure", name, _fmt(va), _fmt(vb), ratio))
    return rows
