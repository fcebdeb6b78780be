# syntax=docker/dockerfile:1
# The image every genforge container in k8s/ runs: the Ray head and workers (jobs run `genforge` there),
# the RayJob submitters and KubeRay's autoscaler sidecar (`ray`), and the MLflow tracking server
# (`mlflow server --app-name basic-auth` against PostgreSQL: the `server` extra).
#
#   docker build -t registry.example.com/genforge:0.1.0 \
#     --build-arg GIT_COMMIT=$(git rev-parse HEAD) --build-arg IMAGE=registry.example.com/genforge:0.1.0 .
#
# GIT_COMMIT and IMAGE become lineage tags on every run (genforge/tracking/lineage.py); the sha256 of
# constraints.txt is computed here, so the image's runs name the exact dependency set they ran with.
#
# The base is pinned by exact tag. For a production build pin its digest as well, e.g.
#   FROM python:3.11.14-slim-bookworm@sha256:<digest>
# with <digest> from `docker buildx imagetools inspect python:3.11.14-slim-bookworm`.
# Python and Ray must match on every node and on the client that submits jobs (Ray 2.60, Python 3.11).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY platform ./platform
COPY evaluation ./evaluation
COPY pipelines ./pipelines
# As `make install` does, minus the editable install and the test extra: every version, transitive ones
# included, comes from constraints.txt. torch 2.14.1 and torchvision 0.29.1 come from PyPI like the rest (the
# CUDA 13 builds whose nvidia-* wheels constraints.txt pins), so one image serves CPU and GPU nodes.
RUN python -m pip install -c constraints.txt '.[server,kubeflow]'

FROM python:3.11.14-slim-bookworm
ARG GIT_COMMIT=unknown
ARG IMAGE=genforge:0.1.0
ENV GENFORGE_GIT_COMMIT=$GIT_COMMIT \
    GENFORGE_IMAGE=$IMAGE \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/genforge
# A numeric, non-root user: Kubernetes can only verify runAsNonRoot against a numeric USER.
RUN groupadd --gid 1000 genforge \
    && useradd --uid 1000 --gid 1000 --home-dir /home/genforge --create-home --shell /usr/sbin/nologin genforge
COPY --from=build /opt/venv /opt/venv
COPY constraints.txt /app/constraints.txt
ENV GENFORGE_CONSTRAINTS_FILE=/app/constraints.txt
# The shipped specs, so that `genforge run pipelines/quickstart.yaml` works from the WORKDIR, where Ray
# starts (a job's driver inherits it). Read-only for the runtime user; runs write under /mnt/genforge.
COPY pipelines/*.yaml /app/pipelines/
WORKDIR /app
USER 1000:1000
EXPOSE 5000 6379 8265 10001
CMD ["genforge", "--help"]
