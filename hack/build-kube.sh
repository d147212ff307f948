#!/usr/bin/env bash
# Build the Kubernetes control plane, kubectl, etcd and helm from the Go module
# proxy (no release downloads are reachable here). Results are cached under
# ~/.cache/ovnkube/<k8s-version>/bin; a second run only checks they exist.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.35}
HELM_VERSION=${HELM_VERSION:-v3.18.6}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}  # v1.14+ need a newer Go than the module proxy's k8s pins
CACHE=${OVNKUBE_CACHE:-$HOME/.cache/ovnkube}
OUT="$CACHE/$KUBE_VERSION/bin"
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
BINS=("${KUBE_CMDS[@]}" etcd helm coredns)

have_all() {
  for b in "${BINS[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if have_all; then
  echo "kube binaries cached in $OUT"
  exit 0
fi

command -v go >/dev/null || { echo "build-kube: 'go' is not installed; it is needed to build Kubernetes" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
. "$(dirname "$0")/kube-module.sh"
mkdir -p "$OUT"
work=$(mktemp -d /tmp/ovnkube-kubebuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# --- Kubernetes -------------------------------------------------------------
missing=()
for c in "${KUBE_CMDS[@]}"; do [ -x "$OUT/$c" ] || missing+=("k8s.io/kubernetes/cmd/$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p "$work/kube" && cd "$work/kube"
  kube_module kubebuild
  ldpkg=k8s.io/component-base/version
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ld="-s -w"
  for p in $ldpkg k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  echo "building Kubernetes $KUBE_VERSION (this takes a while the first time)"
  go mod download k8s.io/kubernetes
  go build -trimpath -ldflags "$ld" -o "$OUT/" "${missing[@]}"
fi

# --- etcd -------------------------------------------------------------------
if [ ! -x "$OUT/etcd" ]; then
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init ovnkube.local/etcdbuild >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  echo "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" .
fi

# --- helm -------------------------------------------------------------------
if [ ! -x "$OUT/helm" ]; then
  mkdir -p "$work/helm" && cd "$work/helm"
  go mod init ovnkube.local/helmbuild >/dev/null 2>&1
  go get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null
  echo "building helm $HELM_VERSION"
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    -o "$OUT/helm" helm.sh/helm/v3/cmd/helm
fi

# --- CoreDNS (the local cluster's DNS, run as a pod like kind's) -----------
if [ ! -x "$OUT/coredns" ]; then
  mkdir -p "$work/coredns" && cd "$work/coredns"
  go mod init ovnkube.local/corednsbuild >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	_ "github.com/coredns/coredns/core/plugin"
	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
  go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null
  echo "building CoreDNS $COREDNS_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$OUT/coredns" .
fi

have_all
echo "kube binaries built in $(( $(date +%s) - start ))s into $OUT"
