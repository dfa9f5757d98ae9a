#!/usr/bin/env bash
# up.sh starts a single-node Kubernetes cluster on this machine from the binaries build.sh
# cached: etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler, containerd 2
# with runc, and the kubelet, pod network on a bridge. It returns when the node is Ready.
# down.sh stops it and undoes what it changed on the host.
#
# Usage: up.sh [--state DIR] [--registry HOST:PORT]... [--tun-plugin BERTH]
#   --state DIR          where configs, data, logs and pid files go (default /tmp/berth-k8s;
#                        also BERTH_K8S_STATE)
#   --registry HOST:PORT a plain-HTTP registry containerd may pull from (repeatable), e.g. berth
#                        on the bridge gateway 10.244.0.1:PORT
#   --tun-plugin BERTH   run BERTH's `tun-device-plugin` beside the kubelet, so that pods can ask
#                        for the node's /dev/net/tun (resource berth.dev/tun), as build pods do
# The admin kubeconfig (group system:masters) is written to DIR/admin.kubeconfig.
set -euo pipefail

registries=()
tun_plugin=
while [ $# -gt 0 ]; do
	case $1 in
	--state) BERTH_K8S_STATE=$2; shift 2 ;;
	--registry) registries+=("$2"); shift 2 ;;
	--tun-plugin) tun_plugin=$2; shift 2 ;;
	*) echo "up.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

[ "$(id -u)" = 0 ] || { echo "up.sh: must run as root" >&2; exit 1; }
[ -x "$bin/kubelet" ] || { echo "up.sh: no cluster binaries in $cache; run build.sh" >&2; exit 1; }

missing=()
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] ||
	missing+=(containernetworking-plugins)
for tool in conntrack socat iptables openssl buildah; do command -v $tool >/dev/null || missing+=($tool); done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

mkdir -p "$state"/{pids,logs,pki,etcd,kubelet,pod-logs,cni/net.d,cni/ipam,containerd/certs.d,images}
# Traversable, not readable: the processes of pods with hostUsers: false run as unprivileged
# host ids and must reach their root filesystems under containerd's directories.
chmod 711 "$state"
chmod 700 "$state/pki"

# write_file PATH: stdin into PATH, leaving PATH alone when unchanged (a running containerd
# or kubelet need not see a rewrite).
write_file() {
	local tmp
	tmp=$(mktemp "$1.XXXXXX")
	cat >"$tmp"
	if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else chmod 600 "$tmp"; mv "$tmp" "$1"; fi
}

# launch NAME COMMAND...: start COMMAND in its own session, logging to logs/NAME.log, unless the
# process recorded for NAME is alive.
launch() {
	local name=$1; shift
	if pid_alive "$name"; then log "$name already running (pid $(cat "$state/pids/$name"))"; return; fi
	setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$state/pids/$name"
	log "started $name (pid $!)"
}

# await NAME WHAT SECONDS COMMAND...: poll COMMAND until it succeeds; fail at once, with the end
# of NAME's log, if NAME died.
await() {
	local name=$1 what=$2 deadline=$((SECONDS + $3)); shift 3
	until "$@" >/dev/null 2>&1; do
		if ! pid_alive "$name"; then
			echo "up.sh: $name exited while waiting for $what; its log ends:" >&2
			tail -n 20 "$state/logs/$name.log" >&2
			exit 1
		fi
		if [ $SECONDS -ge $deadline ]; then echo "up.sh: timed out waiting for $what" >&2; exit 1; fi
		sleep 0.3
	done
	log "$what"
}

# --- what the host looked like before: down.sh restores it ---
if [ ! -f "$state/host.orig" ]; then
	{
		for s in "${host_sysctls[@]}"; do echo "sysctl $s=$(sysctl -n "$s")"; done
		for d in "${host_dirs[@]}"; do [ -e "$d" ] && echo "dir $d"; done
		for table in filter nat mangle; do
			iptables -t $table -S 2>/dev/null | awk -v t=$table '$1 == "-N" {print "iptables " t " " $2}'
			ip6tables -t $table -S 2>/dev/null | awk -v t=$table '$1 == "-N" {print "ip6tables " t " " $2}'
		done
		true
	} >"$state/host.orig"
fi

# --- credentials: a CA, the apiserver's serving cert, the service-account key, an admin token ---
pki=$state/pki
if [ ! -s "$pki/ca.crt" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=berth-k8s-ca \
		-keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
		-keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
	printf '%s\n' 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc' \
		'extendedKeyUsage=serverAuth' >"$pki/apiserver.ext"
	openssl x509 -req -days 30 -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
		-CAcreateserial -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
	openssl genrsa -out "$pki/serviceaccount.key" 2048 2>/dev/null
	openssl rsa -in "$pki/serviceaccount.key" -pubout -out "$pki/serviceaccount.pub" 2>/dev/null
	od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$pki/admin.token"
fi
admin_token=$(cat "$pki/admin.token")
echo "$admin_token,berth-admin,berth-admin,system:masters" | write_file "$pki/tokens.csv"
write_file "$state/admin.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: berth-k8s
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority: $pki/ca.crt
users:
- name: berth-admin
  user:
    token: $admin_token
contexts:
- name: berth-k8s
  context: {cluster: berth-k8s, user: berth-admin}
current-context: berth-k8s
KC

# --- the bridge, made here (not by the first pod) so that its gateway address exists at once ---
if ! ip link show "$bridge" >/dev/null 2>&1; then
	ip link add "$bridge" type bridge
fi
ip addr show dev "$bridge" | grep -q "inet $gateway_cidr" || ip addr add "$gateway_cidr" dev "$bridge"
ip link set "$bridge" up

# --- control plane ---
launch etcd "$bin/etcd" --name berth-k8s --data-dir "$state/etcd" \
	--listen-client-urls "http://127.0.0.1:$etcd_client_port" \
	--advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
	--listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
	--initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
	--initial-cluster "berth-k8s=http://127.0.0.1:$etcd_peer_port"
await etcd "etcd healthy" 30 curl -sf "http://127.0.0.1:$etcd_client_port/health"

# --endpoint-reconciler-type=none: the apiserver refuses to advertise a loopback address to the
# endpoint reconciler. Without kube-proxy there are no Services to route anyway.
launch kube-apiserver "$bin/kube-apiserver" \
	--etcd-servers="http://127.0.0.1:$etcd_client_port" \
	--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$apiserver_port" \
	--endpoint-reconciler-type=none \
	--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
	--client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
	--authorization-mode=Node,RBAC \
	--service-account-issuer=https://kubernetes.default.svc \
	--service-account-key-file="$pki/serviceaccount.pub" \
	--service-account-signing-key-file="$pki/serviceaccount.key" \
	--service-cluster-ip-range=10.96.0.0/16 \
	--kubelet-preferred-address-types=Hostname \
	--allow-privileged=false --profiling=false
await kube-apiserver "apiserver ready" 120 curl -sf --cacert "$pki/ca.crt" \
	-H "Authorization: Bearer $admin_token" "https://127.0.0.1:$apiserver_port/readyz"

launch kube-controller-manager "$bin/kube-controller-manager" \
	--kubeconfig="$KUBECONFIG" \
	--authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
	--bind-address=127.0.0.1 --secure-port="$controller_manager_port" \
	--service-account-private-key-file="$pki/serviceaccount.key" --root-ca-file="$pki/ca.crt" \
	--service-cluster-ip-range=10.96.0.0/16 --leader-elect=false --profiling=false
launch kube-scheduler "$bin/kube-scheduler" \
	--kubeconfig="$KUBECONFIG" \
	--authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
	--bind-address=127.0.0.1 --secure-port="$scheduler_port" --leader-elect=false --profiling=false

# --- the sandbox (pause) image, imported into containerd rather than pulled ---
pause_image=berth.test/k8s/pause:1
pause_archive=$state/images/pause.tar
if [ ! -s "$pause_archive" ]; then
	scratch=$(mktemp -d)
	b() { buildah --root "$scratch/root" --runroot "$scratch/run" --storage-driver vfs "$@"; }
	c=$(b from scratch)
	b copy "$c" "$bin/pause" /pause >/dev/null
	b config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 "$c"
	b commit -q "$c" pause >/dev/null
	b push -q pause "docker-archive:$pause_archive.tmp:$pause_image"
	b rm -a >/dev/null; b rmi -a -f >/dev/null 2>&1 || true
	chmod -R u+w "$scratch"; rm -rf "$scratch"
	mv "$pause_archive.tmp" "$pause_archive"
fi

# --- containerd 2 (CRI) ---
certs=$state/containerd/certs.d
for r in "${registries[@]}"; do
	mkdir -p "$certs/$r"
	write_file "$certs/$r/hosts.toml" <<HOSTS
server = "http://$r"

[host."http://$r"]
  capabilities = ["pull", "resolve"]
HOSTS
done
write_file "$state/cni/net.d/10-$cni_network.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "$cni_network",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$state/cni/ipam",
        "ranges": [[{"subnet": "$pod_subnet", "gateway": "${gateway_cidr%/*}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
CNI
# restrict_oom_score_adj: this machine's root lacks CAP_SYS_RESOURCE, so runc cannot give the
# pause container the oom_score_adj of -998 containerd asks for; clamped, sandboxes start.
write_file "$state/containerd/config.toml" <<TOML
version = 3
root = "$state/containerd/root"
state = "$state/containerd/state"

[grpc]
  address = "$containerd_socket"

[ttrpc]
  address = "$containerd_socket.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$pause_image"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$certs"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$bin/runc"
        Root = "$state/containerd/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$state/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
launch containerd env PATH="$bin:$PATH" "$bin/containerd" --config "$state/containerd/config.toml"
await containerd "containerd serving" 30 "$bin/ctr" --address "$containerd_socket" version
if ! ctr_k8s images ls -q | grep -qx "$pause_image"; then
	ctr_k8s images import "$pause_archive" >/dev/null
	log "imported $pause_image"
fi

# --- kubelet ---
# failCgroupV1: false, this machine has cgroup v1, which the kubelet refuses by default.
write_file "$state/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$containerd_socket
podLogsDir: $state/pod-logs
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
staticPodPath: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
YAML
launch kubelet "$bin/kubelet" --config="$state/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
	--root-dir="$state/kubelet/root" --hostname-override="$node_name" --v=1
await kubelet "node registered" 60 "$bin/kubectl" get node "$node_name"
await kubelet "node Ready" 120 "$bin/kubectl" wait --for=condition=Ready "node/$node_name" --timeout=2s

# --- the tap device plugin (a DaemonSet on a real cluster, deploy/kubernetes) ---
if [ -n "$tun_plugin" ]; then
	launch tun-device-plugin "$tun_plugin" tun-device-plugin --count 8
	await tun-device-plugin "the node offering berth.dev/tun" 60 \
		sh -c "\"$bin/kubectl\" get node \"$node_name\" -o jsonpath='{.status.allocatable.berth\\.dev/tun}' | grep -qx 8"
fi
log "cluster up: KUBECONFIG=$KUBECONFIG"
