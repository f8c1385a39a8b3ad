# killgate: an inference gateway. There is no Docker engine on the machines this was
# written on, so this file is kept simple and was checked by reading, not by building.
#   docker build -t killgate .
#   docker run -p 8080:8080 -p 8081:8081 -e KILLGATE_JWT_SECRET=... \
#     -v $PWD/config/killgate.yaml:/etc/killgate/config.yaml:ro killgate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --uid 10001 --home-dir /var/lib/killgate --create-home killgate

WORKDIR /opt/killgate
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . && python -c "import aiohttp._http_parser, httptools, uvloop"

USER killgate
WORKDIR /var/lib/killgate
# data plane, admin API (bind the admin listener to 0.0.0.0 in the mounted config to
# reach it from outside the container; keep it off the public network).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)" || exit 1
ENTRYPOINT ["killgate"]
CMD ["serve", "-c", "/etc/killgate/config.yaml"]
