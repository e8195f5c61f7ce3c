"""Profile export, each format checked by its real consumer: vLLM's own `vllm serve` argument
parser (the CPU build in CI), transformers, bash and json."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.errors import TunerError
from tuner.profiles.formats import FORMATS, export, hf_kwargs
from tuner.profiles.profile import Profile, read_profile

PROFILES = REPO_ROOT / "profiles"
VLLM_CPU = PROFILES / "cpu/vllm/synthetic-tiny-llama--humaneval-164x64.json"
VLLM_SERVER_CPU = PROFILES / "cpu/vllm-server/synthetic-tiny-llama--humaneval-164x64.json"
HF_CPU = PROFILES / "cpu/hf/synthetic-tiny-llama--humaneval-64x16.json"
HF_H100 = PROFILES / "nvidia-h100-80gb-hbm3/hf/synthetic-llama-1b--humaneval-64x64.json"
HF_CB_CPU = PROFILES / "cpu/hf-cb/synthetic-tiny-llama--humaneval-64x16.json"
HF_SERVER_CPU = PROFILES / "cpu/hf-server/synthetic-tiny-llama--humaneval-64x16.json"
needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"
)


def with_knobs(path: Path, **knobs: Any) -> Profile:
    """A committed profile whose best knobs are changed (to reach every branch of a format)."""
    profile = read_profile(path)
    best = profile.best.model_copy(update={"knobs": {**profile.best.knobs, **knobs}})
    return profile.model_copy(update={"best": best})


@pytest.fixture(scope="module")
def serve_parser() -> Any:
    """`vllm serve`'s parser, built the way vLLM's command line builds it."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
    return parser


def engine_args(parser: Any, argv: list[str]) -> Any:
    """EngineArgs from `vllm serve` arguments, as `vllm serve` makes them (the positional model
    becomes `model`; a local folder, so that nothing is looked up online)."""
    from vllm.engine.arg_utils import EngineArgs

    namespace = parser.parse_args(argv)
    namespace.model = namespace.model_tag or namespace.model
    return EngineArgs.from_cli_args(namespace)


# vLLM profiles: every knob, the booleans both ways.
VLLM_VARIANTS = [
    {},
    {"enable_chunked_prefill": False, "enable_prefix_caching": False, "enforce_eager": True},
]


@needs_vllm
@pytest.mark.parametrize("variant", VLLM_VARIANTS)
@pytest.mark.parametrize("source", [VLLM_CPU, VLLM_SERVER_CPU])
def test_vllm_serve_parses_the_exported_flags_into_the_profiles_knobs(
    serve_parser: Any, fake_model: Path, source: Path, variant: dict[str, Any]
) -> None:
    profile = with_knobs(source, **variant)
    flags = shlex.split(export(profile, "vllm-args"))
    args = engine_args(serve_parser, ["serve", str(fake_model), *flags])
    for name, value in profile.best.knobs.items():
        assert getattr(args, name) == value, name


@needs_vllm
@pytest.mark.parametrize("variant", VLLM_VARIANTS)
def test_vllm_serve_config_file_gives_the_profiles_knobs(
    serve_parser: Any, fake_model: Path, tmp_path: Path, variant: dict[str, Any]
) -> None:
    profile = with_knobs(VLLM_CPU, **variant)
    config = tmp_path / "serve.yaml"
    config.write_text(export(profile, "vllm-config"))
    args = engine_args(serve_parser, ["serve", str(fake_model), "--config", str(config)])
    for name, value in profile.best.knobs.items():
        assert getattr(args, name) == value, name


@needs_vllm
def test_the_api_server_entry_point_takes_the_config_too(fake_model: Path, tmp_path: Path) -> None:
    # `python -m vllm.entrypoints.openai.api_server`, which the vllm-server engine launches,
    # parses with a parser of its own (no `serve` sub-command).
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    profile = with_knobs(VLLM_SERVER_CPU, **VLLM_VARIANTS[1])
    config = tmp_path / "serve.yaml"
    config.write_text(export(profile, "vllm-config"))
    parser = make_arg_parser(FlexibleArgumentParser())
    namespace = parser.parse_args(["--model", str(fake_model), "--config", str(config)])
    args = EngineArgs.from_cli_args(namespace)
    for name, value in profile.best.knobs.items():
        assert getattr(args, name) == value, name


@needs_vllm
def test_a_real_models_config_names_it_so_vllm_serve_needs_nothing_else(
    serve_parser: Any, tmp_path: Path
) -> None:
    profile = read_profile(VLLM_CPU)
    model = profile.model.model_copy(update={"ref": "/models/llama", "source": "local"})
    config = tmp_path / "serve.yaml"
    config.write_text(export(profile.model_copy(update={"model": model}), "vllm-config"))
    namespace = serve_parser.parse_args(["serve", "--config", str(config)])
    assert namespace.model == "/models/llama"
    # A synthetic model is no reference vLLM can load: it is left out.
    assert "model:" not in export(profile, "vllm-config")


@needs_vllm
def test_the_env_file_sets_every_knob_and_the_flags_for_vllm_serve(
    serve_parser: Any, fake_model: Path, tmp_path: Path
) -> None:
    profile = read_profile(VLLM_CPU)
    env_file = tmp_path / "profile.env"
    env_file.write_text(export(profile, "env"))
    shown = subprocess.run(
        ["bash", "-c", f"set -a; . {shlex.quote(str(env_file))}; env -0"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    env = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    assert env["TUNER_PROFILE"] == profile.key and env["TUNER_ENGINE"] == "vllm"
    assert env["TUNER_KNOB_MAX_NUM_SEQS"] == str(profile.best.knobs["max_num_seqs"])
    assert env["TUNER_KNOB_ENFORCE_EAGER"] == "false"
    args = engine_args(
        serve_parser, ["serve", str(fake_model), *shlex.split(env["TUNER_VLLM_ARGS"])]
    )
    assert args.max_num_batched_tokens == profile.best.knobs["max_num_batched_tokens"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"cache_implementation": "static", "torch_compile": False, "attn_implementation": "eager"},
    ],
)
def test_transformers_takes_the_hf_kwargs(tiny_model: Path, variant: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    profile = with_knobs(HF_CPU, batch_size=2, **variant)
    kwargs = json.loads(export(profile, "hf-kwargs"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model, **kwargs["from_pretrained"])
    assert model.dtype == getattr(torch, profile.best.knobs["dtype"])
    assert model.config._attn_implementation == profile.best.knobs["attn_implementation"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer(["def f():"] * kwargs["batch_size"], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, min_new_tokens=3, **kwargs["generate"])
    assert out.shape == (2, ids["input_ids"].shape[1] + 3)
    pipe = pipeline("text-generation", model=str(tiny_model), **kwargs["pipeline"])
    assert pipe.model.dtype == model.dtype and pipe._batch_size == 2
    texts = pipe(["def f():", "x ="], max_new_tokens=2, **kwargs["generate"])
    assert len(texts) == 2


def test_gpu_hf_kwargs_place_the_model_as_the_engine_did() -> None:
    from transformers import GenerationConfig

    kwargs = hf_kwargs(read_profile(HF_H100))
    assert kwargs["from_pretrained"] == {
        "dtype": "float16",
        "attn_implementation": "sdpa",
        "device_map": "cuda",
    }
    assert kwargs["batch_size"] == 155
    config = GenerationConfig(**kwargs["generate"])
    config.validate(strict=True)
    assert config.cache_implementation == "static" and config.disable_compile is False
    two = hf_kwargs(with_knobs(HF_H100, num_gpus=2))
    assert two["from_pretrained"]["device_map"] == "balanced"  # as the hf engine loads


@pytest.mark.slow
def test_generate_batch_takes_the_hf_cb_kwargs(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

    profile = read_profile(HF_CB_CPU)
    kwargs = json.loads(export(profile, "hf-kwargs"))
    cb = ContinuousBatchingConfig(**kwargs["continuous_batching_config"])
    for name in kwargs["continuous_batching_config"]:
        assert getattr(cb, name) == profile.best.knobs[name]
    model = AutoModelForCausalLM.from_pretrained(tiny_model, **kwargs["from_pretrained"])
    assert model.dtype == getattr(torch, profile.best.knobs["dtype"])
    generation = GenerationConfig(**kwargs["generation_config"], max_new_tokens=3)
    out = model.generate_batch(
        [[1, 2, 3, 4]] * 2, generation_config=generation, continuous_batching_config=cb
    )
    assert len(out) == 2


def test_transformers_serve_parses_the_exported_command() -> None:
    import typer
    from transformers.cli.serve import Serve

    profile = read_profile(HF_SERVER_CPU)
    text = export(profile, "hf-serve")
    command = shlex.split(text.strip().splitlines()[-1])
    assert command[:2] == ["transformers", "serve"] and "--continuous-batching" in command
    assert any(line.startswith("# measured with") for line in text.splitlines())
    # `transformers serve`'s own options, parsed by typer as its command line parses them.
    cli = typer.Typer()
    cli.command(name="serve")(Serve)
    params = typer.main.get_command(cli).make_context("serve", command[2:]).params
    assert params["continuous_batching"] is True
    for name, value in profile.best.knobs.items():
        if name != "concurrency":
            assert params[name] == value, name


def test_json_export_round_trips() -> None:
    profile = read_profile(HF_CPU)
    data = json.loads(export(profile, "json"))
    assert data["knobs"] == profile.best.knobs and data["profile"] == profile.key
    assert data["output_tokens_per_s"] == profile.best.measurement.output_tokens_per_s.median


@pytest.mark.parametrize(
    ("path", "fmt", "message"),
    [
        (HF_CPU, "vllm-args", "profile for engine hf; --format vllm-args needs a vllm"),
        (HF_CPU, "vllm-config", "needs a vllm or vllm-server profile"),
        (VLLM_CPU, "hf-kwargs", "profile for engine vllm; --format hf-kwargs needs a hf"),
        (HF_CPU, "yaml", "unknown export format 'yaml'"),
    ],
)
def test_a_format_for_another_engine_is_one_line(path: Path, fmt: str, message: str) -> None:
    with pytest.raises(TunerError, match=message):
        export(read_profile(path), fmt)
    result = CliRunner().invoke(app, ["profile", "export", str(path), "--format", fmt])
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_writes_a_file_and_every_format_is_known(tmp_path: Path) -> None:
    assert set(FORMATS) == {"vllm-args", "vllm-config", "hf-kwargs", "hf-serve", "env", "json"}
    target = tmp_path / "hf.json"
    result = CliRunner().invoke(
        app, ["profile", "export", str(HF_CPU), "-f", "hf-kwargs", "-o", str(target)]
    )
    assert result.exit_code == 0 and json.loads(target.read_text())["batch_size"] > 0
