# The container tier's own helper image (no part of the product): Debian's python3 with h11 and
# cryptography, what tests/support/fake_anthropic.py needs to serve the fake Anthropic API in a pod
# of its own (tests/support/serve_fake_anthropic.py, mounted from the repository), and socat, which
# stands in for Knative's routing in front of an agent pod (port 80 to the container's port).
ARG DEBIAN_IMAGE=debian:trixie-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-h11 python3-cryptography socat >/dev/null \
 && rm -rf /var/lib/apt/lists/*
