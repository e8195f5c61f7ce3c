"""The `vllm-server` engine: vLLM's OpenAI-compatible server, launched per load with the trial's
EngineArgs as flags, measured by the shared load client (`tuner.engines.openai_client`).

Requests speak vLLM's dialect: prompts as token ids, `ignore_eos` and `min_tokens` so that every
request generates exactly its token count. A server that exits before it is ready is reported in
vLLM's own words, and as out-of-memory when those words say memory ran short.
"""

from __future__ import annotations

from typing import ClassVar

from tuner.engines.openai_client import VLLM, Dialect
from tuner.engines.server import ServerEngine, with_load
from tuner.engines.vllm import VllmAdapter, root_cause, vllm_catalogue
from tuner.specs.knobs import Catalogue

DEFAULT_SERVER_CMD = (
    "{python} -m vllm.entrypoints.openai.api_server --model {model} --host {host} "
    "--port {port} --seed 0 {args}"
)


class VllmServer(VllmAdapter, ServerEngine):
    """vLLM's api_server under streaming load."""

    name: ClassVar[str] = "vllm-server"
    default_command: ClassVar[str | None] = DEFAULT_SERVER_CMD
    dialect: ClassVar[Dialect] = VLLM

    @classmethod
    def catalogue(cls) -> Catalogue:
        """vLLM's EngineArgs, and the client's load."""
        return with_load(vllm_catalogue(cls.name))

    @classmethod
    def shipped_catalogue(cls) -> Catalogue:
        """EngineArgs as `engines/vllm.yaml` has them, and the client's load; no vLLM imported."""
        return with_load(super().shipped_catalogue())

    @classmethod
    def failure_cause(cls, log_text: str) -> str:
        """vLLM's own error message, or the log's last line."""
        return root_cause(log_text) or super().failure_cause(log_text)
