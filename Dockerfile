# syntax=docker/dockerfile:1
# The one image of Cerise on Kubernetes. The Helm chart (helm/cerise) runs it as
#   the operator:  kopf run --standalone --namespace=<ns> -m cerise.operator.handlers
#   the apiserver: python -m cerise.apiserver --host=0.0.0.0   (the default command)
# It holds the cerise-k8s package (built as a wheel from this repository) in a virtualenv
# with cwltool pinned at the test hosts' version (the package's workflow checks use it, and
# it is the runner of `local` compute resources, which run jobs inside the operator's pod),
# and the example specialisation at /opt/cerise/specialisations/example (the path the
# chart's default values name).
#
# Built with BuildKit (or podman/buildah), from the public Python image by default:
#   docker build -t <registry>/cerise-k8s:0.1.0 .
# or on any base with Debian bookworm's layout and python, pip and venv on the PATH, e.g.
# the local one that tools/build-image.sh makes with mmdebstrap (no registry needed):
#   podman build --build-arg BASE=localhost/cerise-base:bookworm-... .
# See docs/helm.md.
ARG BASE=python:3.11.13-slim-bookworm

# Build stage: the virtualenv, in layers ordered by how often they change, so that a layer
# cache (BuildKit's or podman's) rebuilds only what a change touches: the package's
# dependencies with the runner's version (keyed by pyproject.toml and that version), then
# the package itself (keyed by its source).
FROM ${BASE} AS build
ARG CWLTOOL_VERSION=3.3.20260925135507
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
 && python -m venv /opt/cerise/venv \
 && /opt/cerise/venv/bin/pip install -r requirements.txt "cwltool==${CWLTOOL_VERSION}"
COPY README.md ./
COPY cerise ./cerise
RUN /opt/cerise/venv/bin/pip install --no-deps .

# Final stage: the same slim base with the virtualenv copied in (same path, same python),
# no compilers, no build files left behind, a non-root user.
# (Debian's package versions below are bookworm's; bump them with the base image.)
FROM ${BASE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# procps: `ps`, which the `none` scheduler of `local` compute resources polls jobs with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends procps=2:4.0.2-3 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 cerise \
 && useradd --system --uid 10001 --gid cerise --home-dir /home/cerise --create-home \
        --shell /usr/sbin/nologin cerise \
 && install -d -o cerise -g cerise /var/lib/cerise
COPY --from=build /opt/cerise/venv /opt/cerise/venv
COPY specialisations/example /opt/cerise/specialisations/example
ENV PATH=/opt/cerise/venv/bin:$PATH \
    CERISE_EXCHANGE_DIR=/var/lib/cerise/files
USER 10001:10001
WORKDIR /home/cerise
EXPOSE 29593 29594 8080
CMD ["python", "-m", "cerise.apiserver", "--host=0.0.0.0"]
