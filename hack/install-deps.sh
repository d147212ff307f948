#!/usr/bin/env bash
# Install everything `make test` and `make demo` need on Debian 12, as root.
# Idempotent: each step checks first, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# One list for this script and the Dockerfile: hack/debian-packages.txt, one
# package per line, `#` comments and blank lines ignored.
mapfile -t APT_PACKAGES < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' \
                                 -e '/^$/d' hack/debian-packages.txt)
[ ${#APT_PACKAGES[@]} -gt 0 ] || { echo "install-deps: no packages in hack/debian-packages.txt" >&2; exit 1; }

# --- Debian packages --------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packages start system-wide daemons; the project runs its own, in private
# directories, so the system ones are stopped to keep the machine quiet.
for svc in ovn-central ovn-host openvswitch-switch; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" 2>/dev/null || true
    systemctl disable "$svc" 2>/dev/null || true
  fi
done
for init in ovn-central ovn-host openvswitch-switch; do
  [ -x "/etc/init.d/$init" ] && "/etc/init.d/$init" stop >/dev/null 2>&1 || true
done

# --- Python virtualenv ------------------------------------------------------
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install-deps: $PY is older than 3.11" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The editable install points at this checkout: a venv reused from another
# path (a copy, a worktree's symlink) is installed again.
stamp=.venv/.installed-$( { sha256sum pyproject.toml; pwd -P; } | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# --- Kubernetes binaries ----------------------------------------------------
bash hack/build-kube.sh
