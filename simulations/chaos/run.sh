#!/usr/bin/env bash
# The chaos run of issue #5 on real processes in network namespaces (see simulations/chaos/doc.go).
#
#   simulations/chaos/run.sh short|long [-chaos.FLAG ...]
#
# short is CI's (under 5 minutes), long is make chaos (about 20). Extra flags go to the test, e.g.
# -chaos.seed=42 to replay a schedule, -chaos.control for the control run, -chaos.relay=off.
# Needs root, iproute2, nftables and tcpdump. The trap deletes this run's namespaces (and kills the
# processes in them, all started by this run) however the test ends, even if go test's timeout
# killed it before its own cleanup ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

size=${1:-short}
shift || true
case $size in
short) timeout=8m ;;
long) timeout=40m ;;
*)
	echo "usage: $0 short|long [-chaos.FLAG ...]" >&2
	exit 2
	;;
esac
if [[ $(id -u) -ne 0 ]]; then
	echo "$0: the chaos run needs root (network namespaces, nftables, tc, tcpdump)" >&2
	exit 1
fi
for tool in ip tc nft tcpdump; do
	if ! command -v "$tool" >/dev/null; then
		echo "$0: $tool is missing (apt-get install -y iproute2 nftables tcpdump)" >&2
		exit 1
	fi
done

prefix="fmc$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
cleanup() {
	local ns pids
	for ns in $(ip netns list | awk -v p="$prefix-" 'index($1, p) == 1 { print $1 }'); do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		if [[ -n $pids ]]; then
			# shellcheck disable=SC2086 # one pid per word
			kill -9 $pids 2>/dev/null || true
		fi
		ip netns del "$ns" 2>/dev/null || true
		echo "$0: cleaned up namespace $ns left by the run" >&2
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go test -tags chaos -run '^TestChaos$' -count=1 -v -timeout "$timeout" ./simulations/chaos/ \
	-args -chaos.size="$size" -chaos.prefix="$prefix" "$@"
