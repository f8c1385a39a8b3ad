# killgate: an inference gateway, as a non-root image whose root filesystem can be read-only.
#
#   podman build -t killgate .                      (or docker build; default base below)
#   podman build --build-arg BASE_IMAGE=localhost/killgate-base:bookworm -t killgate .
#
# BASE_IMAGE: any Debian-like image with python3 >= 3.11 and its venv module. The default is
# the official slim Python image of Debian bookworm (a release named: the bare `3.11-slim` tag
# moves to each new Debian release); deploy/container/make-base-image.sh makes a Debian bookworm
# one with debootstrap where no registry is reachable. The run needs only writable
# /var/lib/killgate (state snapshots) and /tmp: mount an emptyDir/tmpfs on each and run with
# a read-only root filesystem (README "Deploying").
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Dependencies first, in their own layer (rebuilt only when pyproject.toml changes): an
# empty package of the same name pulls them in, then goes.
WORKDIR /deps
COPY pyproject.toml ./
RUN mkdir gateway && touch gateway/__init__.py README.md \
 && python3 -m venv /opt/killgate \
 && /opt/killgate/bin/pip install --no-cache-dir . \
 && /opt/killgate/bin/pip uninstall --yes killgate \
 && /opt/killgate/bin/python -m compileall -q /opt/killgate/lib
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# pip and setuptools go once the package is in (a quarter of the venv, ~25 MB: nothing
# installs into a running image, and nothing killgate imports needs them)
RUN /opt/killgate/bin/pip install --no-cache-dir --no-deps . \
 && /opt/killgate/bin/python -c "import aiohttp._http_parser, httptools, uvloop, hiredis, gateway.app" \
 && /opt/killgate/bin/python -m compileall -q /opt/killgate/lib/python3*/site-packages/gateway \
 && /opt/killgate/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="killgate" \
      org.opencontainers.image.description="Inference gateway: canary split, kill switch, rollback" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/killgate/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/var/lib/killgate KILLGATE_HEALTHZ_URL=http://127.0.0.1:8081/healthz
COPY --from=build /opt/killgate /opt/killgate
# A numeric user (no passwd entry needed), so Kubernetes' runAsNonRoot can verify it.
# /var/lib/killgate is 1777, as /tmp: podman gives a tmpfs mounted over a folder of the
# image (`--tmpfs /var/lib/killgate`) that folder's mode and root as its owner, whatever
# its `mode=` says; with 0755 the user could not write its state there and never got ready.
RUN mkdir -p /var/lib/killgate /etc/killgate && chown 10001:10001 /var/lib/killgate \
 && chmod 1777 /var/lib/killgate
USER 10001:10001
WORKDIR /var/lib/killgate
# data plane, admin API (bind the admin listener to [::] in the mounted config to reach
# it from outside the container, and keep that port off the public network). With another
# admin port, set KILLGATE_HEALTHZ_URL to match.
EXPOSE 8080 8081
# (no proxy: urllib would send the call through $http_proxy, which a host's docker may set
# in every container, and a healthy gateway would read as unhealthy)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['KILLGATE_HEALTHZ_URL'], timeout=2)"]
# SIGTERM drains for server.drain_timeout (30 s by default): `docker stop` kills after 10 s
# unless given more (run --stop-timeout 40, stop -t 40; README "Container image")
STOPSIGNAL SIGTERM
ENTRYPOINT ["killgate"]
CMD ["serve", "-c", "/etc/killgate/config.yaml"]
