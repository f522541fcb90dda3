#!/usr/bin/env bash
# Builds the real Flannel, at pinned versions, for the mixed-cluster and
# migration tests (e2e/interop) and `weftctl lab up --flannel-nodes`:
#
#   flanneld    github.com/flannel-io/flannel            FLANNEL_VERSION
#   flannel     github.com/containernetworking/plugins   CNI_FLANNEL_VERSION, plugins/meta/flannel
#   bridge      github.com/containernetworking/plugins   CNI_PLUGINS_VERSION, plugins/main/bridge
#   host-local  github.com/containernetworking/plugins   CNI_PLUGINS_VERSION, plugins/ipam/host-local
#
# Why these modules:
# - flanneld: `go install github.com/flannel-io/flannel@v0.28.9` fails because
#   one optional cloud backend (tencentvpc) needs an SDK the module proxy does
#   not serve. The module's source is built from a temporary copy with that
#   one blank import dropped from main.go; every backend the tests use (vxlan,
#   host-gw, udp) is untouched.
# - flannel CNI plugin: github.com/flannel-io/cni-plugin is not served by the
#   module proxy here. It is the plugin that lived in
#   github.com/containernetworking/plugins as plugins/meta/flannel until
#   v0.9.1 (v1.0.0 moved it out) and does the same job: read the subnet file,
#   delegate to bridge + host-local. v0.9.1 is its last release there.
# - bridge and host-local: the current containernetworking/plugins release,
#   as a Flannel node of today runs them.
#
# Usage: scripts/flannel.sh [build|dir|check]
#   build (default)  build into the cache unless already complete; print the dir
#   dir              print the directory the binaries live in (built or not)
#   check            exit 0 when the build is complete, 1 otherwise
#
# The binaries land in $WEFT_REF_CACHE/flannel-<versions>/ (default
# /var/cache/weft/ref), stamped .complete, with a VERSIONS file saying where
# each binary comes from. Nothing of the downloaded source enters the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/refbuild.sh
. "$here/lib/refbuild.sh"

FLANNEL_VERSION=v0.28.9
CNI_FLANNEL_VERSION=v0.9.1
CNI_PLUGINS_VERSION=v1.10.0
# The cache key names every pinned version, so changing any one rebuilds.
REF_VERSION="$FLANNEL_VERSION-cni-$CNI_FLANNEL_VERSION-plugins-$CNI_PLUGINS_VERSION"
DIR=$(ref_dir flannel "$REF_VERSION")

build_flanneld() {
  local work=$1 out=$2 src=$1/flannel
  ref_module_src github.com/flannel-io/flannel "$FLANNEL_VERSION" "$src"
  if ! grep -q '^[[:space:]]*_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"$' "$src/main.go"; then
    echo "flannel.sh: main.go of flannel $FLANNEL_VERSION has no tencentvpc import to drop; check the build" >&2
    return 1
  fi
  sed -i '/_ "github.com\/flannel-io\/flannel\/pkg\/backend\/tencentvpc"/d' "$src/main.go"
  rm -rf "$src/pkg/backend/tencentvpc"
  # cgo: Flannel's udp backend forwards packets in C (proxy_amd64.c).
  (cd "$src" && CGO_ENABLED=1 GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" -o "$out/flanneld" .)
}

# Module zips carry no vendor directory: -mod=mod fetches the dependencies
# at the versions go.sum pins.
build_cni_flannel() {
  local work=$1 out=$2 src=$1/plugins-old
  ref_module_src github.com/containernetworking/plugins "$CNI_FLANNEL_VERSION" "$src"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$out/flannel" ./plugins/meta/flannel)
}

build_cni_plugins() {
  local work=$1 out=$2 src=$1/plugins
  ref_module_src github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" "$src"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$out/" ./plugins/main/bridge ./plugins/ipam/host-local)
}

build() {
  if ref_complete "$DIR"; then
    echo "$DIR"
    return 0
  fi
  # Globals, not locals: the EXIT trap runs after build returns.
  stage=$(ref_stage flannel)
  work=$(mktemp -d)
  trap 'rm -rf "$work" "$stage"' EXIT
  echo "flannel.sh: building flanneld $FLANNEL_VERSION, flannel CNI $CNI_FLANNEL_VERSION, bridge + host-local $CNI_PLUGINS_VERSION into $DIR" >&2
  build_flanneld "$work" "$stage"
  build_cni_flannel "$work" "$stage"
  build_cni_plugins "$work" "$stage"
  cat >"$stage/VERSIONS" <<EOF
flanneld	github.com/flannel-io/flannel	$FLANNEL_VERSION	main package, tencentvpc backend import dropped (its SDK is not served)
flannel	github.com/containernetworking/plugins	$CNI_FLANNEL_VERSION	plugins/meta/flannel (the flannel CNI plugin before it moved to flannel-io/cni-plugin, which is not served)
bridge	github.com/containernetworking/plugins	$CNI_PLUGINS_VERSION	plugins/main/bridge
host-local	github.com/containernetworking/plugins	$CNI_PLUGINS_VERSION	plugins/ipam/host-local
EOF
  ref_publish "$stage" "$DIR"
  rm -rf "$work"
  trap - EXIT
  echo "$DIR"
}

case "${1:-build}" in
  build) build ;;
  dir) echo "$DIR" ;;
  check) ref_complete "$DIR" ;;
  *) echo "usage: $0 [build|dir|check]" >&2; exit 2 ;;
esac
