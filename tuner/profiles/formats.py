"""A profile's best configuration in the forms engines and deployments take.

`vllm-args` (flags for `vllm serve`), `vllm-config` (a YAML file for `vllm serve --config`),
`hf-kwargs` (JSON: keyword arguments for `from_pretrained`, `generate` and `pipeline`, or for
`from_pretrained` and continuous batching's `generate_batch`), `hf-serve` (the `transformers
serve` command line of an hf-server profile), `env`
(shell variables, one per knob) and `json` (the knobs and where they were measured). Each format is
checked against its real consumer in the tests: vLLM's own argument parser, transformers.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

import yaml

from tuner.engines.hf_cb import LOAD_KNOBS
from tuner.engines.server import cli_args
from tuner.errors import TunerError
from tuner.fmt import fmt_value
from tuner.profiles.profile import Profile
from tuner.specs.knobs import Value

VLLM_ENGINES = ("vllm", "vllm-server")
HF_ENGINES = ("hf", "hf-pipeline", "hf-cb")
#: hf knobs and where each goes: from_pretrained, generate or the batching around it.
HF_KNOBS = {
    "batch_size",
    "dtype",
    "attn_implementation",
    "cache_implementation",
    "torch_compile",
    "num_gpus",
}


def _header(profile: Profile) -> list[str]:
    """The comment lines heading a file: where the profile comes from. Each is one line
    whatever the profile holds (a newline in a GPU's name would end the comment)."""
    m = profile.best.measurement
    rate = f"{m.output_tokens_per_s.median:,.1f} output tok/s" if m else "no measurement"
    if profile.predicted:
        rate = f"{rate} predicted (not measured) by {profile.predicted}"
    lines = [
        f"tuner profile {profile.key}",
        f"{rate} on {profile.gpu.name}, {profile.workload.name} "
        f"({profile.workload.requests} requests); tuner {profile.tuner_version}",
    ]
    return [_CONTROL.sub(" ", line) for line in lines]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _need(profile: Profile, engines: tuple[str, ...], fmt: str) -> None:
    if profile.engine.name not in engines:
        raise TunerError(
            f"{profile.key} is a profile for engine {profile.engine.name}; --format {fmt} "
            f"needs a {' or '.join(engines)} profile"
        )


def _servable_model(profile: Profile) -> str | None:
    """The model reference an engine can load by itself (not a synthetic model's name)."""
    return profile.model.ref if profile.model.source in ("local", "hf-cache", "named") else None


def _load_line(profile: Profile) -> str:
    verb = "predicted" if profile.predicted else "measured"
    return f"{verb} with {profile.best.knobs['concurrency']} requests in flight"


def _server_knobs(profile: Profile) -> dict[str, Value]:
    """The best knobs the engine takes: the client's load (`concurrency`) is not a flag of
    the server's, but how it was measured."""
    return {k: v for k, v in profile.best.knobs.items() if k != "concurrency"}


def vllm_args(profile: Profile) -> str:
    """One line of `vllm serve` flags: `vllm serve MODEL $(tuner profile export ...)`."""
    _need(profile, VLLM_ENGINES, "vllm-args")
    return shlex.join(cli_args(_server_knobs(profile))) + "\n"


def vllm_config(profile: Profile) -> str:
    """A YAML file for `vllm serve --config FILE` (with the model in it when it is a real one)."""
    _need(profile, VLLM_ENGINES, "vllm-config")
    config: dict[str, Value] = {}
    model = _servable_model(profile)
    if model is not None:
        config["model"] = model
    for name, value in _server_knobs(profile).items():
        key = name.replace("_", "-")
        if value is False:
            # vLLM 0.32's `vllm serve --config` drops `key: false` (it looks for --no-key among
            # the top-level parser's options, not serve's), so false is written as no-key: true.
            config[f"no-{key}"] = True
        else:
            config[key] = value
    lines = _header(profile)
    if "concurrency" in profile.best.knobs:
        lines.append(_load_line(profile))
    header = "".join(f"# {line}\n" for line in lines)
    return header + yaml.safe_dump(config, sort_keys=False)


def hf_kwargs(profile: Profile) -> dict[str, Any]:
    """Keyword arguments for transformers: `from_pretrained(model, **from_pretrained)`,
    `generate(**inputs, **generate)` on batches of `batch_size` prompts, or
    `pipeline("text-generation", model=..., **pipeline)` called with `**generate`."""
    _need(profile, HF_ENGINES, "hf-kwargs")
    knobs = profile.best.knobs
    if profile.engine.name == "hf-cb":
        return _hf_cb_kwargs(profile)
    unknown = sorted(set(knobs) - HF_KNOBS)
    if unknown:
        raise TunerError(f"{profile.key}: hf-kwargs does not know the knob(s) {', '.join(unknown)}")
    load: dict[str, Any] = {}
    if "dtype" in knobs:
        load["dtype"] = knobs["dtype"]
    if "attn_implementation" in knobs:
        load["attn_implementation"] = knobs["attn_implementation"]
    load.update(_placement(profile, knobs))
    generate: dict[str, Any] = {"do_sample": False}
    if "cache_implementation" in knobs:
        generate["cache_implementation"] = knobs["cache_implementation"]
    if "torch_compile" in knobs:
        generate["disable_compile"] = not knobs["torch_compile"]
    batch = int(knobs.get("batch_size", 1))
    pipeline: dict[str, Any] = {k: v for k, v in load.items() if k != "attn_implementation"}
    pipeline["batch_size"] = batch
    if "attn_implementation" in load:
        pipeline["model_kwargs"] = {"attn_implementation": load["attn_implementation"]}
    return {
        "from_pretrained": load,
        "generate": generate,
        "batch_size": batch,
        "pipeline": pipeline,
    }


def _placement(profile: Profile, knobs: dict[str, Value]) -> dict[str, Any]:
    """from_pretrained's device_map as the transformers engines placed the model."""
    if not profile.gpu.count:
        return {}
    # One GPU, or balanced over num_gpus by accelerate (the engine also caps each GPU at its
    # total memory, which is what accelerate assumes).
    return {"device_map": "balanced" if int(knobs.get("num_gpus", 1)) > 1 else "cuda"}


def _hf_cb_kwargs(profile: Profile) -> dict[str, Any]:
    """`from_pretrained(model, **from_pretrained)`, then `model.generate_batch(inputs,
    generation_config=GenerationConfig(**generation_config),
    continuous_batching_config=ContinuousBatchingConfig(**continuous_batching_config))`."""
    knobs = profile.best.knobs
    load: dict[str, Any] = {k: knobs[k] for k in ("dtype", "attn_implementation") if k in knobs}
    load.update(_placement(profile, knobs))
    return {
        "from_pretrained": load,
        "continuous_batching_config": {k: v for k, v in knobs.items() if k not in LOAD_KNOBS},
        "generation_config": {"do_sample": False},
    }


def hf_serve(profile: Profile) -> str:
    """`transformers serve MODEL --continuous-batching` with the profile's flags (the load it
    was measured at, a client setting, in the header)."""
    _need(profile, ("hf-server",), "hf-serve")
    knobs = _server_knobs(profile)
    model = _servable_model(profile) or "MODEL"
    lines = [*_header(profile)]
    if "concurrency" in profile.best.knobs:
        lines.append(_load_line(profile))
    command = shlex.join(
        ["transformers", "serve", model, "--continuous-batching", *cli_args(knobs)]
    )
    return "".join(f"# {line}\n" for line in lines) + command + "\n"


def env_lines(profile: Profile) -> str:
    """Shell variables (`set -a; . FILE`): the profile's identity and one `TUNER_KNOB_<NAME>` per
    knob; vLLM profiles add `TUNER_VLLM_ARGS`, the flags for `vllm serve`. Every value is
    shell-quoted, and knob names are identifiers (a profile is checked when it is read), so
    sourcing the file only sets variables."""
    values: dict[str, str] = {
        "TUNER_PROFILE": profile.key,
        "TUNER_ENGINE": profile.engine.name,
        "TUNER_MODEL": profile.model.ref,
        "TUNER_GPU": profile.gpu.slug,
    }
    for name, value in profile.best.knobs.items():
        values[f"TUNER_KNOB_{name.upper()}"] = fmt_value(value)
    if profile.engine.name in VLLM_ENGINES:
        values["TUNER_VLLM_ARGS"] = shlex.join(cli_args(profile.best.knobs))
    header = "".join(f"# {line}\n" for line in _header(profile))
    return header + "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def knobs_json(profile: Profile) -> dict[str, Any]:
    """The knobs and what they were measured on, for scripts."""
    m = profile.best.measurement
    return {
        "profile": profile.key,
        "engine": profile.engine.name,
        "model": profile.model.ref,
        "workload": profile.workload.name,
        "gpu": profile.gpu.slug,
        "knobs": profile.best.knobs,
        "output_tokens_per_s": m.output_tokens_per_s.median if m else None,
        "tuner_version": profile.tuner_version,
    }


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


FORMATS: dict[str, Callable[[Profile], str]] = {
    "vllm-args": vllm_args,
    "vllm-config": vllm_config,
    "hf-kwargs": lambda p: _dumps(hf_kwargs(p)),
    "hf-serve": hf_serve,
    "env": env_lines,
    "json": lambda p: _dumps(knobs_json(p)),
}


def export(profile: Profile, fmt: str) -> str:
    """The profile in format `fmt` (a key of `FORMATS`), as text."""
    if fmt not in FORMATS:
        raise TunerError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt](profile)
