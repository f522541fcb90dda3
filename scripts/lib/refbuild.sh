# Shared by the scripts that build reference binaries (Flannel, Kubernetes)
# from the Go module proxy. Source it; it defines functions only.
#
# A reference build lands in $WEFT_REF_CACHE/<name>-<version>/ (default
# /var/cache/weft/ref), outside the repository, and is complete only when its
# .complete stamp exists: a build that failed half-way is never used, and a
# complete one is never rebuilt. Nothing of the downloaded source is kept in
# the repository; it is copied to a temporary directory and built there.

ref_cache_root() { printf '%s\n' "${WEFT_REF_CACHE:-/var/cache/weft/ref}"; }

# ref_dir NAME VERSION: where that build lives.
ref_dir() { printf '%s/%s-%s\n' "$(ref_cache_root)" "$1" "$2"; }

# ref_complete DIR: the build in DIR finished.
ref_complete() { [ -f "$1/.complete" ]; }

# ref_module_src MODULE VERSION DEST: downloads MODULE@VERSION through the Go
# module proxy and copies its source, writable, to DEST (which must not exist).
ref_module_src() {
  local mod=$1 ver=$2 dest=$3 dir
  dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "refbuild: go mod download $mod@$ver gave no source directory" >&2
    return 1
  fi
  cp -r "$dir" "$dest"
  chmod -R u+w "$dest"
}

# ref_publish STAGE DIR: moves a finished build from STAGE to DIR and stamps
# it complete. STAGE must be on the same file system (make it with
# ref_stage).
ref_publish() {
  local stage=$1 dir=$2
  chmod 755 "$stage" # mktemp -d made it 0700; other users run the binaries
  touch "$stage/.complete"
  rm -rf "$dir"
  mv "$stage" "$dir"
}

# ref_stage NAME: a fresh staging directory inside the cache root.
ref_stage() {
  local root
  root=$(ref_cache_root)
  mkdir -p "$root"
  mktemp -d "$root/.stage-$1-XXXXXX"
}
