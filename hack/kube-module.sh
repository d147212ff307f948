# Sourced by hack/build-*.sh: make the current directory a throwaway Go module
# that requires k8s.io/kubernetes at $KUBE_VERSION. k8s.io/kubernetes points
# its staging modules at ./staging; each is replaced by the published module
# of the matching v0.X.Y version.
kube_module() {
  go mod init "ovnkube.local/$1" >/dev/null 2>&1
  local gomod stage_ver
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  stage_ver="v0.${KUBE_VERSION#v1.}"
  {
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk -v v="$stage_ver" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
}
