#!/usr/bin/env bash
# down.sh stops the cluster up.sh started and leaves the host as up.sh found it: every process
# it started (by pid, nothing by name), pods first so the kubelet tears their sandboxes down,
# then leftover network namespaces and CNI records, mounts under the state directory, the
# bridge, kubepods cgroups, iptables chains and host directories the components created, and
# the sysctls the kubelet and the bridge plugin changed. Safe to run twice, or after a failed up.
#
# Usage: down.sh [--state DIR] [--purge]
#   --purge  also delete the state directory (etcd data, images, logs, credentials)
set -uo pipefail

purge=false
while [ $# -gt 0 ]; do
	case $1 in
	--state) BERTH_K8S_STATE=$2; shift 2 ;;
	--purge) purge=true; shift ;;
	*) echo "down.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
[ -d "$state" ] || { log "no cluster state in $state"; exit 0; }

# terminate NAME: TERM the process up.sh recorded as NAME, KILL it after 10 s.
terminate() {
	local name=$1 pid
	[ -s "$state/pids/$name" ] || return 0
	pid=$(cat "$state/pids/$name")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null
		for _ in $(seq 50); do pid_alive "$name" || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null && log "killed $name (pid $pid)" || log "stopped $name (pid $pid)"
	fi
	rm -f "$state/pids/$name"
}

containerd_tasks() { ctr_k8s tasks ls -q 2>/dev/null; }

# No new pods, then every pod deleted through the kubelet, which runs the CNI DEL and removes
# each sandbox's network namespace.
terminate kube-scheduler
terminate kube-controller-manager
if pid_alive kube-apiserver && pid_alive kubelet; then
	"$bin/kubectl" delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1
	for _ in $(seq 60); do
		[ -z "$("$bin/kubectl" get pods --all-namespaces -o name 2>/dev/null)" ] &&
			[ -z "$(containerd_tasks)" ] && break
		sleep 0.5
	done
fi
terminate kubelet
terminate tun-device-plugin

# Whatever containers remain (the kubelet was gone or slow): killed through containerd. Their
# shims are containerd's children that outlive it, so their pids are read from its state.
if pid_alive containerd; then
	for task in $(containerd_tasks); do ctr_k8s tasks kill -s SIGKILL "$task" >/dev/null 2>&1; done
	sleep 0.5
	for task in $(containerd_tasks); do ctr_k8s tasks delete -f "$task" >/dev/null 2>&1; done
fi
shim_pids=$(cat "$state"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid 2>/dev/null)
terminate containerd
for pid in $shim_pids; do kill "$pid" 2>/dev/null && log "stopped containerd shim (pid $pid)"; done
terminate kube-apiserver
terminate etcd

# CNI records of our network name the network namespaces of sandboxes never torn down.
for record in /var/lib/cni/results/"$cni_network"-*; do
	[ -f "$record" ] || continue
	netns=$(grep -o '"netns":"[^"]*"' "$record" | cut -d'"' -f4)
	container=$(grep -o '"containerId":"[^"]*"' "$record" | cut -d'"' -f4)
	if [ -n "$netns" ]; then umount "$netns" 2>/dev/null; rm -f "$netns"; fi
	rm -f "$record" /var/lib/cni/results/cni-loopback-"$container"-lo
done

# Mounts under the state directory (kubelet volumes, container rootfs, shm), deepest first.
awk -v s="$state/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
	umount "$m" 2>/dev/null || umount -l "$m"
done

ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge" && log "deleted bridge $bridge"

for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
	for top in "$hierarchy"kubepods "$hierarchy"kubepods.slice; do
		[ -d "$top" ] && find "$top" -depth -type d -exec rmdir {} + 2>/dev/null
	done
done

if [ -f "$state/host.orig" ]; then
	while read -r kind setting; do
		if [ "$kind" = sysctl ]; then sysctl -q -w "$setting"; fi
	done <"$state/host.orig"
	for table in filter nat mangle; do
		for tool in iptables ip6tables; do
			for chain in $($tool -t $table -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
				grep -qx "$tool $table $chain" "$state/host.orig" && continue
				$tool -t $table -F "$chain" && $tool -t $table -X "$chain" && log "removed $tool $table $chain"
			done
		done
	done
	for dir in "${host_dirs[@]}"; do
		[ -e "$dir" ] || continue
		grep -qx "dir $dir" "$state/host.orig" && continue
		mountpoint -q "$dir" && umount "$dir"
		rm -rf "$dir" && log "removed $dir"
	done
	log "restored host settings"
	rm -f "$state/host.orig"
fi

if $purge; then
	rm -rf "$state" && log "removed $state"
fi
