#!/usr/bin/env bash
# provision-node.sh NODE_IP ETCD_IP: install weftd and the CNI plugin, run
# weftd under systemd, wait until it is ready.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
common=/weft/lab/vagrant/common.sh # vagrant uploads the script alone; the repo is at /weft
[[ -r $common ]] || common=$here/common.sh
# shellcheck source=common.sh
source "$common"

node_ip=$1
etcd_ip=$2

install_weft
sysctl -qw net.ipv4.ip_forward=1
cat >/etc/default/weftd <<CONF
WEFTD_ETCD_ENDPOINTS=http://${etcd_ip}:2379
WEFTD_IFACE=${node_ip}
WEFTD_PUBLIC_IP=${node_ip}
WEFTD_IP_MASQ=true
CONF
systemctl enable weftd.service
systemctl restart weftd.service
wait_for "weftd /readyz" 60 curl -fsS http://127.0.0.1:9474/readyz
cat /run/weft/subnet.env
