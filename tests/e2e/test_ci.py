"""`tuner ci` end to end on the CPU: the real transformers engine writes, holds and catches a
regression against a profile; the fake engine covers the tune job and failures quickly."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app

runner = CliRunner()
PROTOCOL = {"repeats": 3, "max_remeasures": 0, "run_time_limit_s": 30, "warmup_time_limit_s": 60}


def write_config(folder: Path, **values: Any) -> Path:
    config = {
        "engine": "hf",
        "model": "synthetic:tiny-llama",
        "workload": "synthetic",
        "requests": 8,
        "output_tokens": 8,
        "protocol": PROTOCOL,
        "profiles_dir": str(folder / "profiles"),
        "run_dir": str(folder / "run"),
        "summary": str(folder / "summary.md"),
        "junit": str(folder / "junit.xml"),
        **values,
    }
    path = folder / "tuner-ci.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ci(path: Path, *extra: str) -> Any:
    return runner.invoke(app, ["ci", "--config", str(path), "--json", *extra])


def junit(folder: Path) -> ET.Element:
    return ET.parse(folder / "junit.xml").getroot()


@pytest.mark.slow
@pytest.mark.slow
def test_hf_on_the_cpu_writes_holds_and_catches_a_regression(
    tiny_model: Path, tmp_path: Path
) -> None:
    # 1. No profile yet: --update measures and writes one.
    first = tmp_path / "first"
    first.mkdir()
    result = ci(write_config(first, profiles_dir=str(tmp_path / "profiles")), "--update")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "new profile" and verdict["profile_written"]
    profile_file = Path(verdict["profile_written"])
    assert profile_file == tmp_path / "profiles/cpu/hf/synthetic-tiny-llama--synthetic-8x8.json"
    assert junit(first).get("skipped") == "1" and junit(first).get("failures") == "0"

    # 2. The same job against it passes (a loaded 2-core machine has read 0.44 of the profile:
    # the tolerance is wide, so that only a claim 100x too high fails).
    second = tmp_path / "second"
    second.mkdir()
    config = write_config(second, profiles_dir=str(tmp_path / "profiles"), tolerance=0.9)
    result = ci(config)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "pass" and verdict["ratio"] >= 0.1
    assert junit(second).get("failures") == "0" and junit(second).get("skipped") == "0"
    summary = (second / "summary.md").read_text()
    assert summary.startswith("## tuner ci: PASS")
    # The bench job measured the held profile's knobs.
    held = json.loads(profile_file.read_text())["best"]["knobs"]
    trial = json.loads((second / "run" / "trials.jsonl").read_text().splitlines()[0])
    assert trial["knobs"] == held

    # 3. A profile claiming 100x the throughput: the same job is a regression, exit 3.
    data = json.loads(profile_file.read_text())
    for run in data["best"]["measurement"]["runs"]:
        run["elapsed_s"] /= 100
    profile_file.write_text(json.dumps(data))
    third = tmp_path / "third"
    third.mkdir()
    result = ci(write_config(third, profiles_dir=str(tmp_path / "profiles"), tolerance=0.9))
    assert result.exit_code == 3, result.output
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "regression" and verdict["ratio"] < 0.1
    failure = junit(third).find("testcase[@name='throughput']/failure")
    assert failure is not None and "below 0.10" in failure.get("message", "")
    assert (third / "summary.md").read_text().startswith("## tuner ci: REGRESSION")
    assert json.loads(profile_file.read_text()) == data  # a failed check writes nothing

    # 4. Asked to update, the same regression replaces the profile instead of failing.
    fourth = tmp_path / "fourth"
    fourth.mkdir()
    config = write_config(fourth, profiles_dir=str(tmp_path / "profiles"), tolerance=0.9)
    result = ci(config, "--update")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "replaced"
    replaced = json.loads(profile_file.read_text())["best"]["measurement"]["output_tokens_per_s"]
    assert replaced["median"] == pytest.approx(
        json.loads(result.stdout)["measured_output_tokens_per_s"]
    )
    assert junit(fourth).get("failures") == "0" and junit(fourth).get("skipped") == "1"


FAKE = {"engine": "tuner.testing:FakeEngine", "output_tokens": 4}


def test_a_tune_job_searches_and_can_replace_the_profile(fake_model: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, model=str(fake_model), job="tune", trials=4, tolerance=0.9, **FAKE
    )
    result = ci(config, "--update")
    assert result.exit_code == 0, result.output
    written = Path(json.loads(result.stdout)["profile_written"])
    profile = json.loads(written.read_text())
    assert profile["trials"]["total"] == 4 + 2  # searched, then the best two confirmed
    # A run directory is never reused: its trials are kept.
    refused = ci(config, "--update")
    assert refused.exit_code == 2 and "already holds a study" in refused.stderr
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "run_dir": str(tmp_path / "run2")}))
    again = ci(config, "--update")
    assert again.exit_code == 0 and json.loads(again.stdout)["verdict"] == "pass"
    assert json.loads(written.read_text())["created_at"] != profile["created_at"]


def test_no_configuration_that_runs_is_exit_1(fake_model: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        model=str(fake_model),
        engine="tuner.testing:CrashingEngine",
        output_tokens=4,
        set={"batch_size": 64},
    )
    result = ci(config, "--update")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["verdict"] == "failed"
    assert junit(tmp_path).find("testcase[@name='measurement']/failure") is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flavour": "x"}, "unknown key 'flavour'; known keys: schema_version, engine"),
        ({"protocol": {"repeat": 3}}, "protocol.repeat: Extra inputs are not permitted"),
        ({"tolerance": 1.5}, "tolerance: Input should be less than 1"),
        ({"job": "soak"}, "job: Input should be 'bench' or 'tune'"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(
    fake_model: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    config = write_config(tmp_path, model=str(fake_model), **FAKE)
    data = yaml.safe_load(config.read_text())
    data.update(change)
    config.write_text(yaml.safe_dump(data))
    result = ci(config)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_or_foreign_profile_is_one_line(fake_model: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, model=str(fake_model), **FAKE)
    result = ci(config)
    assert result.exit_code == 2 and "no profile to hold at" in result.stderr
    h100 = REPO_ROOT / "profiles/nvidia-h100-80gb-hbm3/hf"
    foreign = write_config(
        tmp_path, model=str(fake_model), profile=str(next(h100.glob("*.json"))), **FAKE
    )
    result = ci(foreign)
    assert result.exit_code == 2
    assert "is a profile for engine hf, not fake" in result.stderr
    result = runner.invoke(app, ["ci", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "no CI config at" in result.stderr


def test_help_documents_the_exit_codes() -> None:
    text = " ".join(runner.invoke(app, ["ci", "--help"]).stdout.split())
    assert "3 throughput fell below the profile by more than the tolerance" in text
    assert "2 bad input" in " ".join(runner.invoke(app, ["tune", "--help"]).stdout.split())


SERVED = {"engine": "tuner.testing:FakeServer", "output_tokens": 4}


def test_a_held_configuration_that_breaks_the_profiles_slo_is_exit_3(
    fake_model: Path, tmp_path: Path
) -> None:
    # A profile tuned within a loose limit, written by a short tune job.
    first = tmp_path / "first"
    first.mkdir()
    loose = ["e2e_p99_ms<=60000"]
    config = write_config(
        first, model=str(fake_model), job="tune", trials=3, constraints=loose, **SERVED
    )
    result = ci(config, "--update")
    assert result.exit_code == 0, result.output
    written = Path(json.loads(result.stdout)["profile_written"])
    assert written.name.endswith("--synthetic-8x4--e2e_p99_ms-le-60000.json")
    # The same profile, its limit now beyond what the fake engine can keep.
    data = json.loads(written.read_text())
    data["constraints"] = ["e2e_p99_ms<=0.000001"]
    written.write_text(json.dumps(data))
    second = tmp_path / "second"
    second.mkdir()
    result = ci(write_config(second, model=str(fake_model), profile=str(written), **SERVED))
    assert result.exit_code == 3, result.output
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "slo breach"
    assert verdict["breaches"][0].startswith("p99 E2E latency ")
    assert verdict["breaches"][0].endswith(" > 0 ms")
    failure = junit(second).find("testcase[@name='throughput']/failure")
    assert failure is not None and "p99 E2E latency" in failure.get("message", "")
    assert (second / "summary.md").read_text().startswith("## tuner ci: SLO BREACH")


def test_another_workload_shape_than_the_profiles_is_bad_input_not_a_regression(
    fake_model: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    first.mkdir()
    result = ci(write_config(first, model=str(fake_model), **FAKE), "--update")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["profile_written"]
    second = tmp_path / "second"
    second.mkdir()
    # Held explicitly, on 4 requests instead of 8: exit 2, both shapes named.
    config = write_config(second, model=str(fake_model), requests=4, profile=written, **FAKE)
    result = ci(config)
    assert result.exit_code == 2
    assert "was tuned on synthetic-8x4 and this run is synthetic-4x4" in result.stderr
    # Found by key, the profile of the other shape is named.
    config = write_config(
        second, model=str(fake_model), requests=4, profiles_dir=str(first / "profiles"), **FAKE
    )
    result = ci(config)
    assert result.exit_code == 2
    assert "no profile to hold" in result.stderr and "synthetic-8x4.json" in result.stderr


def test_a_profile_used_on_other_traffic_is_said_by_ci_and_profile_show(
    fake_model: Path, tmp_path: Path
) -> None:
    workload = tmp_path / "mine.yaml"
    shape = {
        "schema_version": 1,
        "name": "mine",
        "source": "synthetic",
        "requests": 8,
        "output_tokens": 4,
    }
    workload.write_text(yaml.safe_dump({**shape, "input_tokens": 32}))
    first = tmp_path / "first"
    first.mkdir()
    config = write_config(first, model=str(fake_model), workload=str(workload), **FAKE)
    result = ci(config, "--update")
    assert result.exit_code == 0, result.output
    written = Path(json.loads(result.stdout)["profile_written"])
    traffic = json.loads(written.read_text())["workload"]["traffic"]
    assert traffic["input_tokens"]["p50"] >= 32 and traffic["shared_prefix_share"] == 0
    assert traffic["arrivals"] == {"kind": "at once", "rate_per_s": None, "gap_cv": None}

    # The same name and shape key, but longer prompts that share prefixes: held, with a warning.
    workload.write_text(
        yaml.safe_dump({**shape, "input_tokens": 32, "prefixes": 2, "prefix_tokens": 96})
    )
    second = tmp_path / "second"
    second.mkdir()
    config = write_config(
        second, model=str(fake_model), workload=str(workload), profile=str(written), **FAKE,
        tolerance=0.9,
    )  # fmt: skip
    result = ci(config)
    assert result.exit_code == 0, result.output
    differences = json.loads(result.stdout)["traffic_differences"]
    assert [d.split(" tokens")[0] for d in differences[:1]] == ["median prompt 128"]
    assert "of prompt tokens in shared prefixes, tuned on 0%" in differences[1]
    assert "was tuned on other traffic (median prompt 128 tokens, tuned on" in result.stderr
    assert "> Warning:" in (second / "summary.md").read_text()

    shown = runner.invoke(app, ["profile", "show", str(written), "--traffic", str(workload)])
    assert shown.exit_code == 0, shown.output
    assert "traffic" in shown.stdout and "0% of prompt tokens in shared" in shown.stdout
    assert "is not the traffic" in shown.stderr and "median prompt 128 tokens" in shown.stderr
    workload.write_text(yaml.safe_dump({**shape, "input_tokens": 32}))
    same = runner.invoke(app, ["profile", "show", str(written), "--traffic", str(workload)])
    assert same.exit_code == 0 and "was tuned on, in shape" in same.stderr
    missing = runner.invoke(app, ["profile", "show", str(written), "--traffic", "jsonl:nope"])
    assert missing.exit_code == 2 and "workload file nope does not exist" in missing.stderr
