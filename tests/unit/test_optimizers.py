"""One contract for every optimizer adapter, on the fake engine's search space."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import CPU, REPO_ROOT
from tuner.errors import TunerError
from tuner.optimizers import OPTIMIZERS, check_available, make_optimizer
from tuner.specs.knobs import Catalogue
from tuner.specs.space import resolve
from tuner.testing import FAKE_CATALOGUE, peak, surface


def fake_space():  # type: ignore[no-untyped-def]
    return resolve(Catalogue.model_validate(FAKE_CATALOGUE), CPU)


def loss(knobs):  # type: ignore[no-untyped-def]
    rate = surface(knobs)
    return None if rate is None else (-rate,)


def two_losses(knobs):  # type: ignore[no-untyped-def]
    """Speed against a cost that grows with the batch: the two pull apart."""
    rate = surface(knobs)
    return None if rate is None else (-rate, float(knobs["batch_size"]))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_proposals_lie_in_the_space_and_asks_may_run_ahead_of_tells(
    name: str, tmp_path: Path
) -> None:
    space = fake_space()
    optimizer = make_optimizer(name, space, budget=20, seed=1, output_dir=tmp_path, starts=[])
    optimizer.observe(space.default_knobs(), loss(space.default_knobs()))
    seen = []
    for _ in range(6):
        # Three proposals in flight, told in the reverse order, failures among them.
        batch = [optimizer.ask() for _ in range(3)]
        for proposal in reversed(batch):
            assert space.complete(proposal.knobs) == proposal.knobs
            seen.append(proposal.knobs)
            optimizer.tell(proposal.handle, loss(proposal.knobs))
    assert len({tuple(sorted(k.items())) for k in seen}) > 5


#: The methods that search the load themselves, from its largest value: no starting points.
SERVING = ("ladder", "descend")


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in ("random", *SERVING)])
def test_model_based_methods_propose_the_starts_first_and_learn(name: str, tmp_path: Path) -> None:
    space = fake_space()
    start = space.complete({"batch_size": 64, "kernel": "fused"})
    optimizer = make_optimizer(name, space, budget=30, seed=0, output_dir=tmp_path, starts=[start])
    asked = [optimizer.ask() for _ in range(8 if name in ("gp", "rf") else 1)]
    assert start in [p.knobs for p in asked]
    for p in asked:
        optimizer.tell(p.handle, loss(p.knobs))
    best = max(surface(p.knobs) or 0.0 for p in asked)
    for _ in range(22):
        p = optimizer.ask()
        optimizer.tell(p.handle, loss(p.knobs))
        best = max(best, surface(p.knobs) or 0.0)
    # The fake surface's peak is far above its default; every method gets most of the way.
    assert best >= 0.5 * peak()[1]


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in ("hyperopt-tpe", "descend")])
def test_multi_objective_methods_take_one_loss_per_objective(name: str, tmp_path: Path) -> None:
    space = fake_space()
    optimizer = make_optimizer(
        name, space, budget=12, seed=0, output_dir=tmp_path, starts=[], objectives=2
    )
    optimizer.observe(space.default_knobs(), two_losses(space.default_knobs()))
    seen = set()
    for _ in range(12):
        proposal = optimizer.ask()
        assert space.complete(proposal.knobs) == proposal.knobs
        seen.add(tuple(sorted(proposal.knobs.items())))
        optimizer.tell(proposal.handle, two_losses(proposal.knobs))
    assert len(seen) > 3


def test_hyperopt_takes_one_objective_only(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="hyperopt-tpe optimizes one objective; for a Pareto"):
        make_optimizer(
            "hyperopt-tpe", fake_space(), budget=5, seed=0, output_dir=tmp_path, objectives=2
        )
    with pytest.raises(TunerError, match="hyperopt-tpe optimizes one objective"):
        check_available("hyperopt-tpe", objectives=2)


def test_an_unknown_optimizer_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="unknown optimizer 'tpe'; known: ladder, gp, rf, random"):
        make_optimizer("tpe", fake_space(), budget=5, seed=0, output_dir=tmp_path)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "random"])  # random learns nothing
def test_observing_knobs_outside_the_space_fails(name: str, tmp_path: Path) -> None:
    optimizer = make_optimizer(name, fake_space(), budget=5, seed=0, output_dir=tmp_path)
    with pytest.raises((TunerError, ValueError)):
        optimizer.observe({"batch_size": 1, "kernel": "quantum", "cache": "dynamic"}, (-1.0,))


def test_a_missing_optional_library_is_one_line_before_any_study(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "hyperopt" else real(name)
    )
    with pytest.raises(TunerError, match=r"needs hyperopt, which is not installed: pip install"):
        check_available("hyperopt-tpe")
    check_available("gp")


SILICON = (
    REPO_ROOT
    / "benchmarks/data/external/aiconfigurator-silicon"
    / "silicon-b200-minimaxai-minimax-m2.5-fp4-1024x1024-vllm0.19.0.json"
)


def test_gp_scores_every_configuration_of_a_finite_space(tmp_path: Path) -> None:
    """On a recorded table (a grid with points the source never ran), SMAC's acquisition is
    maximized over exactly the table's points; on a space with a range it is SMAC's own."""
    import json

    from tuner.optimizers.smac import all_configurations, configspace, knobs_of
    from tuner.study.prepare import prepare

    setup = prepare(f"replay:{SILICON}", "", "")
    space, table = setup.space, setup.replay.table  # type: ignore[union-attr]
    configs = all_configurations(space, configspace(space))
    assert configs is not None
    found = sorted(json.dumps(knobs_of(space, c), sort_keys=True) for c in configs)
    assert found == sorted(json.dumps(p.knobs, sort_keys=True) for p in table.points)
    assert len(found) < math.prod(len(v) for v in table.grid.values())  # not-run points out
    assert all_configurations(fake_space(), configspace(fake_space())) is None

    optimizer = make_optimizer("gp", space, budget=12, seed=0, output_dir=tmp_path, starts=[])
    recorded = {json.dumps(p.knobs, sort_keys=True): p for p in table.points}
    for _ in range(12):
        proposal = optimizer.ask()
        point = recorded[json.dumps(proposal.knobs, sort_keys=True)]  # KeyError: not a point
        rate = point.measurement.output_tokens_per_s.median if point.measurement else None
        optimizer.tell(proposal.handle, None if rate is None else (-rate,))
