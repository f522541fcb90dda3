#!/usr/bin/env bash
# check.sh: the cross-VM connectivity matrix of the Vagrant lab. Every VM's
# test pod pings every other VM's test pod (bounded: 3 tries of one ping
# with a 2 s timeout). Exit 0 only if every pair works. Run from lab/vagrant.
set -euo pipefail

nodes=(node1 node2 node3)
pod=${POD:-pod1}
declare -A ip

vssh() { vagrant ssh "$1" -c "$2" -- -q 2>/dev/null; }

for n in "${nodes[@]}"; do
	addr=$(vssh "$n" "sudo ip -n $pod -4 -o addr show dev eth0" | awk '{print $4}' | cut -d/ -f1)
	if [[ -z "$addr" ]]; then
		echo "$n: pod $pod has no address (run 'vagrant provision $n --provision-with pod')" >&2
		exit 1
	fi
	ip[$n]=$addr
done

failures=0
printf '%-14s' 'from\to'
for d in "${nodes[@]}"; do printf '%-18s' "$d/${ip[$d]}"; done
printf '\n'
for s in "${nodes[@]}"; do
	printf '%-14s' "$s/$pod"
	for d in "${nodes[@]}"; do
		if [[ $s == "$d" ]]; then
			printf '%-18s' '-'
			continue
		fi
		ok=FAIL
		for _ in 1 2 3; do
			if vssh "$s" "sudo ip netns exec $pod ping -n -q -c 1 -W 2 ${ip[$d]}" >/dev/null; then
				ok=ok
				break
			fi
		done
		[[ $ok == ok ]] || failures=$((failures + 1))
		printf '%-18s' "$ok"
	done
	printf '\n'
done
if ((failures > 0)); then
	echo "$failures pairs FAILED"
	exit 1
fi
echo "all pairs reachable"
