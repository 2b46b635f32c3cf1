# Multi-stage build: wheels in the build stage, a venv in a slim runtime stage, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY collectors ./collectors
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# postfix's client binaries give the postqueue -j fallback when the showq socket is not shared.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python -m venv /opt/mtaq \
 && /opt/mtaq/bin/pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels
# uid 10154, and the postdrop group so the agent can open public/showq of a shared queue volume.
RUN useradd --system --uid 10154 --no-create-home --shell /usr/sbin/nologin mtaq \
 && usermod -a -G postdrop mtaq
USER 10154
EXPOSE 10154
HEALTHCHECK --interval=30s --timeout=5s CMD ["/opt/mtaq/bin/python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:10154/healthz', timeout=4)"]
ENTRYPOINT ["/opt/mtaq/bin/mtaq-exporter"]
