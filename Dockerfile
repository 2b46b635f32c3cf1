# Multi-stage build: the package and its pinned dependencies go into a venv in the build stage,
# and the runtime stage copies only that venv; it runs as the non-root uid 10154.
#
#   podman build -t mtaq-exporter .                  # or docker build
#   podman build --build-arg BASE_IMAGE=localhost/debian-python:bookworm -t mtaq-exporter .
#
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module, useradd and
# groupadd; both stages must use the same one (the venv refers to its interpreter by path).
# PIP_CERT: a CA bundle inside the build (mounted with --volume) for networks that intercept TLS.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY exporter ./exporter
COPY collectors ./collectors
# PIP_CONSTRAINT (not -c) also pins the build backend pip installs in its isolated build env.
# pip and setuptools leave the venv afterwards: the agent needs neither at run time.
RUN python3 -m venv /opt/mtaq \
 && PIP_CONSTRAINT=/src/constraints.txt /opt/mtaq/bin/python -m pip install --no-cache-dir \
        --disable-pip-version-check . \
 && /opt/mtaq/bin/python -m pip uninstall --yes --quiet setuptools pip

FROM ${BASE_IMAGE}
# VERSION is pyproject.toml's (a test keeps them equal); REVISION the commit, SOURCE the URL of
# the repository the image is built from: pass both with --build-arg when publishing.
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="mtaq-exporter" \
      org.opencontainers.image.description="Postfix/Exim queue, log and blocklist exporter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/mtaq/bin:$PATH
RUN groupadd --system --gid 10154 mtaq \
 && useradd --system --uid 10154 --gid 10154 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mtaq
COPY --from=build /opt/mtaq /opt/mtaq
# To open public/showq of a shared Postfix queue, the pod adds the MTA's postdrop gid as a
# supplementary group (Kubernetes: securityContext.supplementalGroups); no Postfix binaries are
# needed here, since postqueue would talk to the same socket.
USER 10154:10154
EXPOSE 10154
# The check reads the agent's own flags from PID 1 (listen address, web-config TLS), so it follows
# whatever the container was started with. Kubernetes ignores HEALTHCHECK: the chart has probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/opt/mtaq/bin/mtaq-exporter", "healthcheck", "--agent-pid", "1"]
ENTRYPOINT ["/opt/mtaq/bin/mtaq-exporter"]
