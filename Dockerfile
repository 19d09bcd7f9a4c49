# model-guard GitHub App: the webhook service with its workers and nightly scheduler.
# The image runs no training: it installs the package without the `train` extra (no torch).
# Nor the demo: the local GitHub sandbox (sandbox/, for tests and `model-guard demo`) is not
# copied and the `demo` extra not installed; `model-guard demo` says so in one line here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin guard \
    && mkdir -p /data && chown guard:guard /data

WORKDIR /app

# Dependencies first, so a source change does not reinstall them: install the declared
# dependencies from pyproject.toml with empty packages, then drop the placeholder.
COPY pyproject.toml README.md ./
RUN mkdir -p engine/schemas bot/schemas \
    && touch engine/__init__.py bot/__init__.py \
    && pip install . \
    && pip uninstall -y model-guard \
    && rm -rf engine bot build

COPY engine engine
COPY bot bot
RUN pip install --no-deps . && rm -rf build

USER guard
ENV MODEL_GUARD_DB=/data/model-guard.sqlite3 \
    MODEL_GUARD_DATA=/data \
    HOST=0.0.0.0 \
    PORT=3000
VOLUME ["/data"]
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]

# Secrets come from the environment at run time (GITHUB_WEBHOOK_SECRET, GITHUB_APP_ID,
# GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH); none is baked into the image.
CMD ["model-guard", "serve"]
