from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import REPO_ROOT
from tuner.errors import TunerError
from tuner.measure.measurement import MeasurementProtocol
from tuner.profiles.profile import (
    SCHEMA_FILE,
    find_profiles,
    json_schema,
    profile_path,
    read_profile,
    schema_text,
    write_profile,
)
from tuner.specs.workloads import load_workload
from tuner.study.profile import build_profile
from tuner.study.rundir import StudySpec
from tuner.study.study import Study


def test_shipped_schema_is_the_one_generated_from_the_code() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), "regenerate: tuner profile schema > " + str(
        SCHEMA_FILE
    )


@pytest.fixture(scope="module")
def profile_and_study(fake_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    spec = StudySpec(
        engine="tuner.testing:FakeEngine",
        model=str(fake_model),
        workload=load_workload("synthetic", requests=8, output_tokens=4),
        trials=6,
        protocol=MeasurementProtocol(run_time_limit_s=5, warmup_time_limit_s=5),
    )
    study = Study.create(spec, tmp_path_factory.mktemp("run"))
    outcome = study.run()
    return build_profile(study, outcome), outcome


def test_profile_records_what_a_user_needs(profile_and_study) -> None:  # type: ignore[no-untyped-def]
    profile, outcome = profile_and_study
    assert profile.gpu.slug == "cpu" or profile.gpu.count >= 1
    assert profile.engine.name == "fake" and profile.engine.versions == {"fake": "1.0"}
    assert profile.best.knobs == outcome.best.knobs
    assert profile.baseline is not None and profile.baseline.number == 0
    base = profile.baseline.measurement.output_tokens_per_s.median
    best = profile.best.measurement.output_tokens_per_s.median
    assert best >= base and profile.speedup == pytest.approx(best / base, rel=1e-3)
    # Six searched, then the best two measured again.
    assert profile.trials.total == 8 and sum(profile.trials.by_status.values()) == 8
    assert profile.workload.requests == 8 and profile.workload.output_tokens == 32
    jsonschema.validate(json.loads(profile.model_dump_json()), json_schema())


def test_write_is_atomic_and_reads_back(profile_and_study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    profile, _ = profile_and_study
    path = profile_path(tmp_path, profile)
    assert path.relative_to(tmp_path).as_posix().startswith(f"{profile.gpu.slug}/fake/")
    write_profile(profile, path)
    assert read_profile(path) == profile
    assert find_profiles(tmp_path) == [path]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TunerError, match="cannot write profile"):
        write_profile(profile, blocker / "x" / "p.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "not a profile"),
        ('{"schema_version": 7}', "schema_version 7 is not one this tuner reads"),
        ('{"schema_version": 1, "gpu": {}}', "not a valid profile"),
    ],
)
def test_bad_profiles_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(TunerError, match=message):
        read_profile(path)
    with pytest.raises(TunerError, match="no profile at"):
        read_profile(tmp_path / "missing.json")


def test_committed_profiles_validate_and_read() -> None:
    root = REPO_ROOT / "profiles"
    schema = json.loads(SCHEMA_FILE.read_text())
    paths = find_profiles(root)
    assert paths, "the repository commits profiles"
    for path in paths:
        jsonschema.validate(json.loads(path.read_text()), schema)
        profile = read_profile(path)
        assert path == profile_path(root, profile)


def test_a_profile_of_one_named_objective_still_reads(tmp_path: Path) -> None:
    shipped = REPO_ROOT / "profiles/cpu/hf/synthetic-tiny-llama--humaneval-64x16.json"
    data = json.loads(shipped.read_text())
    del data["objectives"], data["constraints"]
    data["objective"] = "output_tokens_per_s"  # as profiles were written before goals
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    profile = read_profile(old)
    assert profile.objectives == ["output_tokens_per_s"] and profile.constraints == []
    assert profile.key == "cpu/hf/synthetic-tiny-llama--humaneval-64x16"
