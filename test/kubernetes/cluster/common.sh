# common.sh is sourced by up.sh and down.sh: where the cluster's binaries and state live, the
# ports it listens on, and small helpers. Every port is on 127.0.0.1 and below the kernel's
# ephemeral range, so it cannot collide with the 127.0.0.1:0 listeners of berth's tests.

cache=${BERTH_K8S_CACHE:-/var/cache/berth/k8s-1.37.2}
bin=$cache/bin
state=${BERTH_K8S_STATE:-/tmp/berth-k8s}

etcd_client_port=12379
etcd_peer_port=12380
apiserver_port=16443
kubelet_port=10250
kubelet_healthz_port=10248
controller_manager_port=10257
scheduler_port=10259

# The pod network: one bridge, the host is its gateway. Pods' images are pulled by containerd
# on the host, so a registry listening on the gateway address is reachable before any pod runs.
bridge=k8sn0
pod_subnet=10.244.0.0/24
gateway_cidr=10.244.0.1/24
cni_network=berth-k8s
# The kubelet refuses a loopback node IP; named "localhost", the node is reached by the
# apiserver through its Hostname address, which resolves to the loopback the kubelet binds.
node_name=localhost

# Host settings the cluster changes: the kubelet sets the kernel.* and vm.* ones at start,
# the bridge plugin turns on forwarding. up.sh records them, down.sh puts them back.
host_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)
# Host directories that runtimes create on first use; down.sh removes the ones up.sh did not find.
host_dirs=(/run/netns /run/containerd /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers)

export KUBECONFIG=$state/admin.kubeconfig
containerd_socket=$state/containerd/containerd.sock

log() { printf '%s %s\n' "$(date -u +%H:%M:%S.%N | cut -c1-12)" "$*"; }

# pid_alive NAME: whether the process up.sh started as NAME is still running. A process that
# exited is a zombie until something reaps it (up.sh's launcher is gone; init may be slow to):
# it counts as gone.
pid_alive() {
	local f=$state/pids/$1 pid
	[ -s "$f" ] || return 1
	pid=$(cat "$f")
	kill -0 "$pid" 2>/dev/null && ! awk '{exit $3 == "Z" ? 0 : 1}' "/proc/$pid/stat" 2>/dev/null
}

ctr_k8s() { "$bin/ctr" --address "$containerd_socket" --namespace k8s.io "$@"; }
