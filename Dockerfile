# The ovnkube-py image of helm/ovn-kubernetes-py (values.yaml: image.repository
# ovnkube-py, tag 0.1.0): this package (`ovnkube`, `ovn-k8s-cni-overlay`,
# `ovnkube-local` on PATH) and the Debian packages of hack/debian-packages.txt
# (Open vSwitch, OVN central and host, iproute2, nftables, ...).
#
# Not built or tested here: this repository's machines have no container
# engine. Build it where one runs, from the repository's root:
#   docker build -t ovnkube-py:0.1.0 .
# No ENTRYPOINT: the chart gives each container its command.
FROM debian:12

# One list of Debian packages, shared with hack/install-deps.sh: read from the
# file, one package per line, `#` comments and blank lines ignored. python3
# is this project's interpreter (python3-venv, in the list, brings the venv's pip).
COPY hack/debian-packages.txt /tmp/debian-packages.txt
RUN set -eu; \
    pkgs=$(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d' \
           /tmp/debian-packages.txt); \
    test -n "$pkgs"; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 $pkgs; \
    rm -rf /var/lib/apt/lists/* /tmp/debian-packages.txt

# This project, installed (not editable) into its own venv.
ENV VIRTUAL_ENV=/opt/ovnkube/venv
COPY . /tmp/ovnkube-src
RUN set -eu; \
    python3 -m venv "$VIRTUAL_ENV"; \
    "$VIRTUAL_ENV/bin/python" -m pip install --no-cache-dir --upgrade pip; \
    "$VIRTUAL_ENV/bin/python" -m pip install --no-cache-dir /tmp/ovnkube-src; \
    rm -rf /tmp/ovnkube-src
ENV PATH=/opt/ovnkube/venv/bin:$PATH
