"""The `hf-server` engine: `transformers serve --continuous-batching`, launched per load with the
trial's flags and measured by the shared load client (`tuner.engines.server`).

Requests speak the `transformers` dialect: prompts as text (the server refuses token ids), and
no `ignore_eos` or `min_tokens` (it refuses them too), so a request could stop early at an
end-of-sequence token; the client checks each request's token count against what was asked and
counts a short one as failed, with both counts. The catalogue's flags are checked against the
installed `transformers serve` at start-up. It needs `transformers[serving]`
(`pip install -e ".[hf-server]"`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from tuner.engines import load_catalogue
from tuner.engines.hf import check_architecture, transformers_versions
from tuner.engines.openai_client import TRANSFORMERS, Dialect
from tuner.engines.server import ServerEngine, with_load
from tuner.errors import TunerError
from tuner.specs.knobs import Catalogue

DEFAULT_SERVER_CMD = (
    "{python} -m transformers.cli.transformers serve {model} --continuous-batching "
    "--host {host} --port {port} --default-seed 0 --log-level warning {args}"
)


def serve_options() -> tuple[str, set[str]]:
    """The installed transformers' version and `transformers serve` options (as knob names);
    one line when serving is not installed."""
    import transformers
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        raise TunerError(
            "hf-server needs transformers[serving] (fastapi, uvicorn, openai): "
            "pip install -e '.[hf-server]'"
        )
    from transformers.cli.serve import Serve

    return transformers.__version__, set(inspect.signature(Serve.__init__).parameters)


class TransformersServer(ServerEngine):
    """`transformers serve` with continuous batching, under streaming load."""

    name: ClassVar[str] = "hf-server"
    default_command: ClassVar[str | None] = DEFAULT_SERVER_CMD
    dialect: ClassVar[Dialect] = TRANSFORMERS

    @classmethod
    def catalogue(cls) -> Catalogue:
        version, options = serve_options()
        knobs = {
            name: spec
            if name in options
            else spec.model_copy(
                update={
                    "unavailable": f"transformers {version} serve has no --{name.replace('_', '-')}"
                }
            )
            for name, spec in load_catalogue(cls.name).knobs.items()
        }
        return with_load(load_catalogue(cls.name).model_copy(update={"knobs": knobs}))

    @classmethod
    def shipped_catalogue(cls) -> Catalogue:
        """`engines/hf-server.yaml` and the client's load, unchecked against `transformers
        serve`."""
        return with_load(load_catalogue(cls.name))

    @classmethod
    def versions(cls) -> dict[str, str]:
        return transformers_versions()

    @classmethod
    def check_model(cls, config: Mapping[str, Any]) -> None:
        check_architecture(config)
