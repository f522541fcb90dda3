#!/usr/bin/env bash
# Shared by the provisioning scripts: install the weft binaries and units
# from the repo mounted at /weft (the same files `make install` installs).
set -euo pipefail

WEFT_SRC=${WEFT_SRC:-/weft}

install_weft() {
	local b
	if ! command -v curl >/dev/null; then
		apt-get update -q && apt-get install -y -q curl
	fi
	for b in weftd weftctl weft portmap cnitool; do
		if [[ ! -x "$WEFT_SRC/bin/$b" ]]; then
			echo "missing $WEFT_SRC/bin/$b: on the host run 'GOOS=linux GOARCH=amd64 make build'" \
				"and 'go build -o bin/cnitool github.com/containernetworking/cni/cnitool', then 'vagrant provision'" >&2
			exit 1
		fi
	done
	install -D -m 0755 "$WEFT_SRC/bin/weftd" /usr/local/bin/weftd
	install -D -m 0755 "$WEFT_SRC/bin/weftctl" /usr/local/bin/weftctl
	install -D -m 0755 "$WEFT_SRC/bin/cnitool" /usr/local/bin/cnitool
	install -D -m 0755 "$WEFT_SRC/bin/weft" /opt/cni/bin/weft
	install -D -m 0755 "$WEFT_SRC/bin/portmap" /opt/cni/bin/portmap
	install -D -m 0644 "$WEFT_SRC/deploy/systemd/weftd.service" /etc/systemd/system/weftd.service
	install -D -m 0644 "$WEFT_SRC/deploy/systemd/weft-etcd.service" /etc/systemd/system/weft-etcd.service
	systemctl daemon-reload
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND once a second.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local i
	for ((i = 0; i < secs; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 1
	done
	echo "timed out after ${secs}s waiting for $what" >&2
	return 1
}
