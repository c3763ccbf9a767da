# The prefpair command line in a small image, for docker-compose.yml (consumer daemon, compile job).
#
#   docker build -t prefpair .
#   docker run --rm prefpair --help
#
# Installs the repository itself (not from PyPI). The COPY lines mirror the package folders
# of pyproject.toml ([tool.setuptools.package-dir]); a new top-level package needs a line here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY prefpair ./prefpair
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
COPY compile ./compile
COPY service ./service
COPY report ./report
COPY judge ./judge
COPY cli ./cli
COPY simulate ./simulate

# Plain install (no editable mode, no dev extras): prefpair, its runtime dependencies and the HTTP service.
RUN pip install ".[service]" \
    && useradd --create-home --uid 1000 prefpair \
    && mkdir -p /data \
    && chown prefpair /data

USER prefpair
# The Parquet log and compiled datasets live here; compose mounts a volume on it.
ENV PREFPAIR_HOME=/data
WORKDIR /data

ENTRYPOINT ["prefpair"]
CMD ["--help"]
