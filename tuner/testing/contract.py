"""The engine contract, checked on one adapter."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.specs.knobs import Catalogue, Value


def check_engine_contract(
    engine: str,
    model: str,
    *,
    requests: int = 8,
    output_tokens: int = 4,
    options: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Value] | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Checks the engine contract (`tuner.engines.base`) on one adapter, loading it with its
    default knobs (`knobs` set over them) on `model` and a synthetic workload; raises
    AssertionError naming the clause broken, else returns what it saw. Run it in a process of
    its own for engines that start processes (vLLM)."""
    import tempfile

    from tuner.engines import engine_class
    from tuner.specs.workloads import load_workload
    from tuner.study.prepare import prepare

    workload = load_workload("synthetic", requests=requests, output_tokens=output_tokens)
    setup = prepare(engine, model, workload, dict(knobs or {}), options=dict(options or {}))
    cls = engine_class(engine)
    versions = _check_class(cls)
    load, run = setup.space.split(setup.space.default_knobs())
    log_file = Path(log_dir or tempfile.mkdtemp(prefix="tuner-contract-")) / "engine.log"
    loaded = cls(setup.model.path, load, {**setup.options, "log_file": str(log_file)})
    try:
        prepared = loaded.prepare(setup.requests, run)
        out = loaded.run(prepared, time.perf_counter() + 600)
        asked = sum(r.output_tokens for r in setup.requests)
        assert out.requests == len(setup.requests), (
            f"{out.requests} of {requests} requests done, {out.failed} failed {out.failures}, "
            f"{out.cut} cut"
        )
        assert out.output_tokens == asked, f"{out.output_tokens} tokens out, {asked} asked"
        assert out.failed == 0, f"{out.failed} requests failed: {out.failures}"
        late = loaded.run(prepared, time.perf_counter() - 1)
        assert late.requests < len(setup.requests), "a run past its deadline did all the work"
        gpus = loaded.gpu_indices()
        assert isinstance(gpus, list) and all(isinstance(g, int) for g in gpus), gpus
        effective = loaded.effective_knobs()
        assert isinstance(effective, dict), effective
    finally:
        loaded.close()
    return {
        "versions": versions,
        "requests": out.requests,
        "output_tokens": out.output_tokens,
        "late_requests": late.requests,
        "gpu_indices": gpus,
        "effective_knobs": effective,
    }


def _check_class(cls: Any) -> dict[str, str]:
    """The contract's clauses on the adapter class itself; its versions."""
    from tuner.errors import TunerError

    for attr in ("name", "fresh_process_per_load", "options"):
        assert hasattr(cls, attr), f"the adapter class declares no {attr}"
    assert isinstance(cls.catalogue(), Catalogue), "catalogue() returns no Catalogue"
    versions = cls.versions()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items()), versions
    try:
        cls.check_options({"no-such-option": 1})
    except TunerError:
        pass
    else:
        raise AssertionError("check_options() took an option it does not declare")
    assert cls.is_oom(MemoryError()) and not cls.is_oom(ValueError("bad value")), "is_oom()"
    return versions
