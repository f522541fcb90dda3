#!/usr/bin/env bash
# Builds the Kubernetes reference binaries the kube-mode tests run against:
# kube-apiserver and kube-controller-manager at a pinned release, from the
# k8s.io/kubernetes module on the Go module proxy, into
# $WEFT_REF_CACHE/kubernetes-<version>/ (default /var/cache/weft/ref).
#
#   scripts/kube.sh          build when absent; print the directory
#   scripts/kube.sh --dir    print the directory only (built or not)
#
# The module's go.mod points every k8s.io/* staging module at a local path
# (./staging/src/k8s.io/X) that the module download does not include. The
# build therefore copies the source to a staging directory, removes go.work
# and vendor/, points each replace at the published k8s.io/X of the same
# release (v0.<minor>.<patch>), and drops the two sample modules nothing
# requires and that are not published. A cold build takes about 11 minutes
# on 2 cores; a rebuild from Go's build cache about 15 seconds.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/refbuild.sh
. "$here/lib/refbuild.sh"

dir=$(ref_dir kubernetes "$KUBE_VERSION")
if [ "${1:-}" = "--dir" ]; then
  echo "$dir"
  exit 0
fi
if ref_complete "$dir"; then
  echo "$dir"
  exit 0
fi

# Two builds at once (make test while a test run builds) would race on the
# same directory: the second waits for the first and then finds it complete.
mkdir -p "$(ref_cache_root)"
exec 9>"$(ref_cache_root)/.kubernetes-$KUBE_VERSION.lock"
flock 9
if ref_complete "$dir"; then
  echo "$dir"
  exit 0
fi

case $KUBE_VERSION in
  v1.*.*) ;;
  *) echo "kube.sh: KUBE_VERSION must look like v1.MINOR.PATCH, not $KUBE_VERSION" >&2; exit 1 ;;
esac
# k8s.io/kubernetes v1.M.P is published with its staging modules at v0.M.P.
staging_version=v0.${KUBE_VERSION#v1.}
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}

stage=$(ref_stage kubernetes)
trap 'rm -rf "$stage"' EXIT
src=$stage/src
echo "kube.sh: building kube-apiserver and kube-controller-manager $KUBE_VERSION in $stage" >&2
ref_module_src k8s.io/kubernetes "$KUBE_VERSION" "$src"

cd "$src"
rm -rf go.work go.work.sum vendor
edits=()
# Each staging module k8s.io/X is replaced by ./staging/src/k8s.io/X.
for mod in $(go mod edit -json | sed -n 's|.*"Path": "\./staging/src/\(k8s\.io/[^"]*\)".*|\1|p' | sort -u); do
  case $mod in
    k8s.io/sample-cli-plugin|k8s.io/sample-controller) edits+=("-dropreplace=$mod") ;;
    *) edits+=("-replace=$mod=$mod@$staging_version") ;;
  esac
done
if [ ${#edits[@]} -eq 0 ]; then
  echo "kube.sh: found no ./staging replaces in k8s.io/kubernetes $KUBE_VERSION's go.mod; the recipe no longer fits this release" >&2
  exit 1
fi
go mod edit "${edits[@]}"

vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
ldflags="$ldflags -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
mkdir -p "$stage/bin"
GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$stage/bin/" ./cmd/kube-apiserver ./cmd/kube-controller-manager
"$stage/bin/kube-apiserver" --version >&2

rm -rf "$src"
chmod 0755 "$stage"
ref_publish "$stage" "$dir"
trap - EXIT
echo "$dir"
