"""The engine registry: a plain map from names to lazy import paths.

`--engine` takes a name from `ENGINES`, an import path `package.module:Class` of an adapter of
your own (see `tuner.engines.base` and the fakes in `tuner.testing`). `replay:<table.json>` is
not an engine: `tuner.study.prepare` hands it to `tuner.replay.replay`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tuner.engines.base import EngineClass
from tuner.errors import TunerError
from tuner.specs.knobs import Catalogue
from tuner.specs.paths import spec_dir

ENGINES: dict[str, str] = {
    "hf": "tuner.engines.hf:GenerateEngine",
    "hf-pipeline": "tuner.engines.hf_pipeline:PipelineEngine",
    "hf-cb": "tuner.engines.hf_cb:ContinuousBatchingEngine",
    "hf-server": "tuner.engines.hf_server:TransformersServer",
    "vllm": "tuner.engines.vllm:OfflineEngine",
    "vllm-server": "tuner.engines.vllm_server:VllmServer",
    "openai-server": "tuner.engines.server:CommandServer",
}


def engine_class(name: str) -> EngineClass:
    """The adapter class for an engine name or a `module:Class` path."""
    target = ENGINES.get(name, name)
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise TunerError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise TunerError(f"cannot load engine adapter {target!r}: {exc}") from None


def shipped_catalogue(engine: str) -> Catalogue:
    """The knob catalogue of `engine` as tuner ships it, not checked against the installed
    library: what a table recorded with that engine replays with, where the engine itself is
    not installed. An adapter whose `catalogue()` asks its library offers `shipped_catalogue()`
    beside it; for the others the two are the same."""
    cls = engine_class(engine)
    return getattr(cls, "shipped_catalogue", cls.catalogue)()


def catalogue_file(engine: str) -> Path:
    """The shipped knob catalogue of a built-in engine: `engines/<engine>.yaml`."""
    return spec_dir("engines") / f"{engine}.yaml"


def load_catalogue(engine: str) -> Catalogue:
    """Reads `engines/<engine>.yaml` (for adapters whose catalogue is shipped as a file)."""
    return Catalogue.from_file(catalogue_file(engine))
