# Multi-stage build: wheels in the build stage, a venv in a slim runtime stage, non-root.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY collectors ./collectors
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="mtaq-exporter" \
      org.opencontainers.image.description="Postfix/Exim queue, log and blocklist exporter" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /wheels /wheels
RUN python -m venv /opt/mtaq \
 && /opt/mtaq/bin/pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && groupadd --system --gid 10154 mtaq \
 && useradd --system --uid 10154 --gid 10154 --no-create-home --shell /usr/sbin/nologin mtaq
# To open public/showq of a shared Postfix queue, the pod adds the MTA's postdrop gid as a
# supplementary group (Kubernetes: securityContext.supplementalGroups); no Postfix binaries are
# needed here, since postqueue would talk to the same socket.
USER 10154:10154
EXPOSE 10154
HEALTHCHECK --interval=30s --timeout=5s CMD ["/opt/mtaq/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10154/healthz', timeout=4)"]
ENTRYPOINT ["/opt/mtaq/bin/mtaq-exporter"]
