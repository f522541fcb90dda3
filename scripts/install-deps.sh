#!/usr/bin/env bash
# Installs the OS packages weft's tests, lab and benchmarks use, on Debian or
# Ubuntu, when any is missing. Idempotent; does nothing when all are there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip      || need+=(iproute2)
have nft     || need+=(nftables)
have iptables || need+=(iptables)
have iperf3  || need+=(iperf3)
have ping    || need+=(iputils-ping)
have ethtool || need+=(ethtool)
have tcpdump || need+=(tcpdump)
# scripts/flannel.sh: flanneld's udp backend is cgo.
have gcc     || need+=(gcc libc6-dev)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${need[*]}; run as root (or: sudo apt-get install ${need[*]})." >&2
  echo "install-deps: continuing: kernel tests skip when not root anyway." >&2
  exit 0
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
