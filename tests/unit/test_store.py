"""The profile store: lookup for this machine's GPU (or the closest one), diff, bad profiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.errors import TunerError
from tuner.hardware.machine import detect_hardware
from tuner.profiles.store import diff, for_machine, pick, read_store, resolve_profile
from tuner.testing import fake_hardware

COMMITTED = REPO_ROOT / "profiles"
H100 = "nvidia-h100-80gb-hbm3/hf/synthetic-llama-1b--humaneval-64x64"
CPU_HF = "cpu/hf/synthetic-tiny-llama--humaneval-64x16"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "profiles"
    shutil.copytree(COMMITTED, root)
    return root


def test_the_gpu_present_finds_its_own_profile(store: Path) -> None:
    lookup = for_machine(read_store(store), fake_hardware(), engine="hf")
    _, profile, warning = pick(lookup, fake_hardware())
    assert profile.key == H100 and warning is None and lookup.closest is None


def test_another_gpu_is_offered_the_closest_gpus_profile_marked_as_such(store: Path) -> None:
    a100 = fake_hardware("NVIDIA A100-SXM4-80GB", 81_920, "8.0")
    lookup = for_machine(read_store(store), a100, engine="hf")
    assert lookup.gpu_slug == "nvidia-a100-sxm4-80gb" and lookup.closest == H100.split("/")[0]
    _, profile, warning = pick(lookup, a100)
    assert profile.key == H100
    assert warning is not None and "no profile for NVIDIA A100-SXM4-80GB" in warning
    assert "closest GPU's, NVIDIA H100 80GB HBM3" in warning


def test_same_architecture_counts_before_memory(tmp_path: Path, store: Path) -> None:
    # An H200-like profile (Hopper, 141 GB) beats an Ampere card with the same memory as the
    # machine (80 GB) for another Hopper machine with 94 GB.
    ampere = json.loads((store / f"{H100}.json").read_text())
    ampere["gpu"].update(slug="ampere-80", name="Ampere 80", compute_capability="8.0")
    hopper = json.loads((store / f"{H100}.json").read_text())
    hopper["gpu"].update(slug="hopper-141", name="Hopper 141", memory_mib=144_000)
    for p in (ampere, hopper):
        target = store / p["gpu"]["slug"] / "hf" / "synthetic-llama-1b--humaneval-64x64.json"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(p))
    (store / H100.split("/")[0]).joinpath("hf", "synthetic-llama-1b--humaneval-64x64.json").unlink()
    h100_nvl = fake_hardware("NVIDIA H100 NVL", 95_830, "9.0")
    lookup = for_machine(read_store(store), h100_nvl, engine="hf")
    assert lookup.closest == "hopper-141"


def test_a_machine_without_a_gpu_takes_cpu_profiles_only(store: Path) -> None:
    lookup = for_machine(read_store(store), fake_hardware(None), engine="hf")
    assert [e.profile.key for e in lookup.entries if e.profile] == [CPU_HF]
    lookup = for_machine(read_store(store), fake_hardware(None), model="synthetic:llama-1b")
    assert lookup.entries == [] and lookup.closest is None
    with pytest.raises(TunerError, match=r"no profile for this machine \(no GPU\)"):
        pick(lookup, fake_hardware(None))


def test_several_matches_ask_to_narrow(store: Path) -> None:
    lookup = for_machine(read_store(store), fake_hardware(None))
    held = len(list((store / "cpu").glob("*/*.json")))  # every committed CPU profile matches
    with pytest.raises(TunerError, match=rf"{held} profiles match.*narrow with --engine"):
        pick(lookup, fake_hardware(None))


def test_a_key_or_a_path_names_a_profile(store: Path) -> None:
    assert resolve_profile(CPU_HF, store) == store / f"{CPU_HF}.json"
    assert resolve_profile(str(store / f"{CPU_HF}.json"), store) == store / f"{CPU_HF}.json"
    with pytest.raises(TunerError, match="neither a file nor a key"):
        resolve_profile("cpu/hf/nothing", store)


def test_diff_puts_knobs_and_figures_side_by_side(store: Path) -> None:
    from tuner.profiles.profile import read_profile

    a = read_profile(store / f"{CPU_HF}.json")
    b = read_profile(store / f"{H100}.json")
    rows = {(r.section, r.name): r for r in diff(a, b)}
    assert rows[("knob", "batch_size")].a == str(a.best.knobs["batch_size"])
    assert rows[("knob", "batch_size")].b == "155" and rows[("knob", "batch_size")].differs
    assert rows[("knob", "num_gpus")].a == "-" and rows[("knob", "num_gpus")].b == "1"
    rate = rows[("figure", "output tok/s")]
    assert rate.ratio == pytest.approx(
        b.best.measurement.output_tokens_per_s.median
        / a.best.measurement.output_tokens_per_s.median
    )
    assert rows[("figure", "J / output token")].a == "-"  # no energy on a CPU
    assert not rows[("identity", "engine")].differs


def test_cli_list_show_and_diff(store: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["profile", "list", "--dir", str(store), "--json"])
    assert listed.exit_code == 0
    assert {p["key"] for p in json.loads(listed.stdout)} >= {H100, CPU_HF}
    mine = runner.invoke(app, ["profile", "list", "--dir", str(store), "--gpu", "auto", "--json"])
    assert mine.exit_code == 0
    if not detect_hardware().gpus:  # CI: no GPU, so the cpu profiles
        assert {p["key"].split("/")[0] for p in json.loads(mine.stdout)} == {"cpu"}
    shown = runner.invoke(
        app, ["profile", "show", "--dir", str(store), "--gpu", "auto", "-e", "hf", "--json"]
    )
    assert shown.exit_code == 0 and json.loads(shown.stdout)["engine"]["name"] == "hf"
    named = runner.invoke(
        app, ["profile", "show", H100, "--dir", str(store), "--gpu", "nvidia-h100-80gb-hbm3"]
    )
    assert named.exit_code == 2 and "not both" in named.stderr
    diffed = runner.invoke(app, ["profile", "diff", CPU_HF, H100, "--dir", str(store), "--json"])
    assert diffed.exit_code == 0
    knobs = {r["name"]: r for r in json.loads(diffed.stdout) if r["section"] == "knob"}
    assert knobs["cache_implementation"]["b"] == "static"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"schema_version": 99}', "schema_version 99 is not one this tuner reads"),
        ('{"schema_version": 1, "gpu": {}}', "not a valid profile"),
        ("[1, 2]", "not a profile"),
    ],
)
def test_a_bad_profile_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for args in (
        ["show", str(bad)],
        ["export", str(bad), "-f", "json"],
        ["diff", str(bad), str(bad)],
    ):
        result = CliRunner().invoke(app, ["profile", *args])
        assert result.exit_code == 2, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output


def test_a_profile_for_another_engine_than_asked_is_one_line(store: Path) -> None:
    result = CliRunner().invoke(
        app, ["profile", "show", CPU_HF, "--dir", str(store), "--engine", "vllm"]
    )
    assert result.exit_code == 2
    assert "is a profile for engine hf, not vllm" in result.stderr
