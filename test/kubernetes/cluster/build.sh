#!/usr/bin/env bash
# build.sh compiles the binaries of the single-node test cluster once and keeps them in a cache
# directory outside the checkout (CI clones afresh; the cache outlives the clone). A second run
# finds the version stamp and returns at once, without touching the network.
#
# Everything comes from the Go module proxy: k8s.io/kubernetes is not meant to be a dependency,
# its go.mod requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and points
# them at ./staging. Built from a wrapper module, those requirements are replaced by the published
# v0.$MINOR.$PATCH modules. containerd has exclude directives in its go.mod, which `go install
# pkg@version` refuses, so its module is copied out of the module cache and built as the main
# module. containerd 2 and runc 1.3 are needed for pods with hostUsers: false (Debian's 1.6 CRI
# does not offer user namespaces).
#
# Usage: build.sh            (cache dir: $BERTH_K8S_CACHE, default /var/cache/berth/k8s-<version>)
set -euo pipefail

kube_version=1.37.2
staging_version=0.37.2
etcd_version=3.6.6
containerd_version=2.1.9
runc_version=1.3.6

cache=${BERTH_K8S_CACHE:-/var/cache/berth/k8s-$kube_version}
key="kubernetes=$kube_version etcd=$etcd_version containerd=$containerd_version runc=$runc_version"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
	containerd containerd-shim-runc-v2 ctr runc pause)

cached() {
	[ "$(cat "$cache/VERSIONS" 2>/dev/null)" = "$key" ] || return 1
	local b
	for b in "${binaries[@]}"; do [ -x "$cache/bin/$b" ] || return 1; done
}
if cached; then
	echo "cluster binaries cached in $cache ($key)"
	exit 0
fi

missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s libseccomp-dev >/dev/null 2>&1 || missing+=(libseccomp-dev)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing build dependencies: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

start=$(date +%s)
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
# Built into a staging directory and moved into place whole, so an interrupted build never
# leaves a cache that looks complete.
out=$cache.partial
rm -rf "$out"
mkdir -p "$out/bin"
export GOFLAGS=-buildvcs=false

echo "== kubernetes v$kube_version"
mkdir "$work/kube" && cd "$work/kube"
go mod init berth.test/kubebuild >/dev/null 2>&1
go mod edit -require="k8s.io/kubernetes@v$kube_version"
kube_dir=$(go mod download -json "k8s.io/kubernetes@v$kube_version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$kube_dir/go.mod" | sort -u); do
	go mod edit -replace="$m=$m@v$staging_version"
done
cat >tools.go <<'EOG'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOG
go mod tidy
version_flags="-s -w -X k8s.io/component-base/version.gitVersion=v$kube_version"
version_flags+=" -X k8s.io/component-base/version.gitMajor=${kube_version%%.*}"
minor=${kube_version#*.}
version_flags+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
version_flags+=" -X k8s.io/client-go/pkg/version.gitVersion=v$kube_version"
go build -ldflags="$version_flags" -o "$out/bin/" \
	k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet

echo "== etcd v$etcd_version"
mkdir "$work/etcd" && cd "$work/etcd"
go mod init berth.test/etcdbuild >/dev/null 2>&1
printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
go get "go.etcd.io/etcd/server/v3@v$etcd_version"
go mod tidy
go build -ldflags="-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3

echo "== runc v$runc_version"
GOBIN="$out/bin" CGO_ENABLED=1 go install -ldflags="-s -w" -tags seccomp "github.com/opencontainers/runc@v$runc_version"

echo "== containerd v$containerd_version"
containerd_dir=$(cd "$work" && go mod download -json "github.com/containerd/containerd/v2@v$containerd_version" |
	sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
cp -r "$containerd_dir" "$work/containerd"
chmod -R u+w "$work/containerd"
cd "$work/containerd"
CGO_ENABLED=1 go build -ldflags="-s -w" -tags 'no_btrfs no_zfs no_devmapper no_aufs' -o "$out/bin/" \
	./cmd/containerd ./cmd/containerd-shim-runc-v2 ./cmd/ctr

echo "== pause"
# The sandbox's first process: it holds the pod's namespaces, reaps orphans and leaves on TERM.
mkdir "$work/pause" && cd "$work/pause"
go mod init berth.test/pause >/dev/null 2>&1
cat >main.go <<'EOG'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOG
CGO_ENABLED=0 go build -ldflags="-s -w" -o "$out/bin/pause" .

echo "$key" >"$out/VERSIONS"
rm -rf "$cache"
mv "$out" "$cache"
echo "cluster binaries built into $cache in $(($(date +%s) - start))s"
