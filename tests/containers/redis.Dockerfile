# Stands in for the image clrk's install manifests name for Redis (redis:7.4-alpine, which no
# registry here can give): Debian's redis-server on the local trixie base, run exactly as rendered
# (platform/config/redis.yaml: command redis-server, its arguments, a non-root user, a read-only
# root filesystem, /data an emptyDir). No part of the product.
ARG DEBIAN_IMAGE=debian:trixie-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /data
