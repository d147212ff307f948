#!/usr/bin/env bash
# Build the upstream network e2e suite (hack/e2e/e2e_test.go) at the cluster's
# Kubernetes version into ~/.cache/ovnkube/<version>/bin/e2e-network.test.
# Only `make e2e-upstream` needs it; a second run only checks it exists.
set -euo pipefail
KUBE_VERSION=${KUBE_VERSION:-v1.33.13}
CACHE=${OVNKUBE_CACHE:-$HOME/.cache/ovnkube}
OUT="$CACHE/$KUBE_VERSION/bin"
BIN="$OUT/e2e-network.test"
GINKGO="$OUT/ginkgo"
if [ -x "$BIN" ] && [ -x "$GINKGO" ]; then echo "e2e suite cached in $BIN"; exit 0; fi
command -v go >/dev/null || { echo "build-e2e: 'go' is not installed" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/ovnkube-e2ebuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
cd "$work"
. "$here/kube-module.sh"
kube_module e2ebuild
cp "$here/e2e/e2e_test.go" .
start=$(date +%s)
go mod tidy >/dev/null 2>&1 || true
if [ ! -x "$BIN" ]; then
  echo "building the network e2e suite of Kubernetes $KUBE_VERSION (about 5 minutes the first time)"
  go test -c -trimpath -ldflags "-s -w" -o "$BIN" .
  echo "e2e suite built in $(( $(date +%s) - start ))s: $BIN ($(du -h "$BIN" | cut -f1))"
fi
# The ginkgo CLI at the suite's own ginkgo version runs it in parallel (--procs).
if [ ! -x "$GINKGO" ]; then
  gv=$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
  go get "github.com/onsi/ginkgo/v2/ginkgo@$gv" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$GINKGO" github.com/onsi/ginkgo/v2/ginkgo
  echo "ginkgo $gv built: $GINKGO"
fi
