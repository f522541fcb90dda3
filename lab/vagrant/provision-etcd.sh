#!/usr/bin/env bash
# provision-etcd.sh ETCD_IP BACKEND: run the embedded etcd on this VM and
# write the network config through `weftctl config set`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
common=/weft/lab/vagrant/common.sh # vagrant uploads the script alone; the repo is at /weft
[[ -r $common ]] || common=$here/common.sh
# shellcheck source=common.sh
source "$common"

etcd_ip=$1
backend=$2

install_weft
cat >/etc/default/weft-etcd <<CONF
WEFTCTL_DATA_DIR=/var/lib/weft/etcd
WEFTCTL_LISTEN_CLIENT_URLS=http://${etcd_ip}:2379
CONF
systemctl enable --now weft-etcd.service
wait_for "etcd on ${etcd_ip}:2379" 60 curl -fsS "http://${etcd_ip}:2379/health"

printf '{"Network": "10.244.0.0/16", "Backend": {"Type": "%s"}}\n' "$backend" |
	WEFTCTL_ETCD_ENDPOINTS="http://${etcd_ip}:2379" weftctl config set -
echo "etcd up on ${etcd_ip}:2379, backend ${backend}"
