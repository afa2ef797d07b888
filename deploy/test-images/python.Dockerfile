# Stand-in for python:3.12-slim where no registry is reachable (scripts/test-deploy): Debian's python3.
# BASE_IMAGE is a minimal Debian imported from debootstrap; its apt sources name the mirror it came from.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
