#!/usr/bin/env bash
# provision-pod.sh NAME: a test pod namespace attached through the weft CNI
# plugin, driven by cnitool from the conflist weftd installed (as a runtime
# would).
set -euo pipefail

pod=${1:-pod1}
if ip netns list | grep -qw "$pod"; then
	CNI_PATH=/opt/cni/bin NETCONFPATH=/etc/cni/net.d cnitool del weft "/var/run/netns/$pod" || true
	ip netns del "$pod"
fi
ip netns add "$pod"
ip -n "$pod" link set lo up
CNI_PATH=/opt/cni/bin NETCONFPATH=/etc/cni/net.d cnitool add weft "/var/run/netns/$pod"
ip -n "$pod" -4 -o addr show dev eth0
