#!/usr/bin/env bash
# install-deps.sh: make a Debian machine able to build, run and test berth.
#
#   scripts/install-deps.sh          everything: packages, test tools, benchmark baseline
#   scripts/install-deps.sh --test   what `make test` needs (the same, today)
#   scripts/install-deps.sh --run    only what `make run` needs (a Go toolchain)
#
# distribution's registry is the slowest build by far. It is the benchmark's
# baseline, and the build engine's shared test suite pushes to it as an
# independent real registry, so `make test` builds it too (once: the Go build
# cache keeps it). buildkitd and buildctl (the BuildKit engine's daemon and
# CLI) are built the same way, from a throwaway module, since `go install`
# refuses BuildKit's module; the first build takes minutes on a small machine.
#
# Idempotent: every step first checks whether its result is already there, so a
# second run does nothing and touches no network. Needs root only when a Debian
# package is missing. Test tools are built from Go modules through the Go module
# proxy into .tools/bin (project-local, never on the system PATH); the normal Go
# build and module caches are reused, so a rebuild after `rm -rf .tools` is quick.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_BIN="$ROOT/.tools/bin"

# Pinned tool versions. The conformance suite has no tags of its own on the
# proxy; this pseudo-version is distribution-spec main of 2026-08-31, the
# config-driven OCI 1.1 suite (OCI_VERSION/OCI_REGISTRY/..., ~850 tests).
CONFORMANCE_MODULE=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
ORAS_MODULE=oras.land/oras
ORAS_VERSION=v1.3.6
DISTRIBUTION_MODULE=github.com/distribution/distribution/v3
DISTRIBUTION_VERSION=v3.1.2
# The linter `make vet` runs (staticcheck 2026.2.2).
STATICCHECK_MODULE=honnef.co/go/tools
STATICCHECK_VERSION=v0.8.2
# buildkitd and buildctl for the BuildKit build engine; the same version as
# the client library in go.mod.
BUILDKIT_MODULE=github.com/moby/buildkit
BUILDKIT_VERSION=v0.34.2

PACKAGES=(
	# image tools driven by the end-to-end tests
	buildah podman skopeo runc uidmap fuse-overlayfs
	# the build sandbox: user and network namespaces with a user-mode network
	rootlesskit slirp4netns iproute2
	# the tiny base image the tests build (a static busybox)
	busybox-static
	# git sources for builds, ssh for git-over-ssh tests
	git openssh-server openssh-client
	# protoc for the generated-code freshness check (scripts/gen-proto.sh)
	protobuf-compiler
	# build plumbing
	make ca-certificates
	# the production metadata database and queue, used by unit tests
	postgresql redis-server
)
# `make run` serves with the local executor, whose builds need buildah and
# their sandbox (the server refuses to start without them); skopeo is what
# the BuildKit engine (an executor's ENGINE: buildkit) runs on the host,
# beside buildkitd, which the full install builds into .tools/bin.
RUN_PACKAGES=(ca-certificates git buildah runc uidmap rootlesskit slirp4netns iproute2 skopeo)

log() { printf 'install-deps: %s\n' "$*" >&2; }

mode=all
case "${1:-}" in
"") ;;
--run) mode=run ;;
--test) mode=test ;;
*)
	echo "usage: $0 [--run | --test]" >&2
	exit 2
	;;
esac

# apt_install installs the named Debian packages that are not installed yet,
# running apt-get update once, and only when something is missing.
apt_install() {
	local missing=() p
	for p in "$@"; do
		if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
			missing+=("$p")
		fi
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	if ((EUID != 0)); then
		log "missing Debian packages: ${missing[*]} (run this script as root to install them)"
		return 1
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps package scripts from starting daemons (sshd, postgres,
	# redis) on machines without systemd; .ci/run starts what the tests need.
	local policy=/usr/sbin/policy-rc.d created_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		created_policy=1
	fi
	local rc=0
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
	if ((created_policy)); then rm -f "$policy"; fi
	return "$rc"
}

# go_version_ok reports whether `go` exists and is at least the version go.mod
# asks for.
wanted_go() { awk '$1 == "go" { print $2; exit }' "$ROOT/go.mod"; }
go_version_ok() {
	command -v go >/dev/null 2>&1 || return 1
	local have want
	have="$(go env GOVERSION 2>/dev/null | sed 's/^go//')" || return 1
	want="$(wanted_go)"
	[[ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" == "$want" ]]
}

# ensure_go makes a Go toolchain of go.mod's version available. Debian ships an
# older Go; the Go toolchain itself is published as the module
# golang.org/toolchain, so any Go can fetch it through the module proxy.
ensure_go() {
	if [[ -x /usr/local/go/bin/go ]] && [[ ":$PATH:" != *":/usr/local/go/bin:"* ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	fi
	if go_version_ok; then
		return 0
	fi
	command -v go >/dev/null 2>&1 || apt_install golang-go
	local want arch dir tmp
	want="$(wanted_go)"
	arch="$(dpkg --print-architecture)"
	log "fetching the Go $want toolchain through the module proxy"
	tmp="$(mktemp -d)"
	dir="$(cd "$tmp" && GOFLAGS=-mod=mod GOTOOLCHAIN=local GOMODCACHE="$tmp/mod" \
		go mod download -json "golang.org/toolchain@v0.0.1-go$want.linux-$arch" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[[ -n $dir && -f $dir/bin/go ]] || {
		log "could not download the Go $want toolchain"
		return 1
	}
	rm -rf /usr/local/go
	cp -a "$dir" /usr/local/go
	# Module zips carry no file modes; the toolchain's programs need theirs back.
	chmod -R u+w /usr/local/go
	chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
	chmod -R u+w "$tmp" && rm -rf "$tmp"
	export PATH="/usr/local/go/bin:$PATH"
	go_version_ok || {
		log "Go in /usr/local/go is not $want"
		return 1
	}
}

# go_tool MODULE VERSION PACKAGE NAME builds PACKAGE at MODULE@VERSION into
# .tools/bin/NAME unless the binary there already reports that module version.
go_tool() {
	local module=$1 version=$2 pkg=$3 name=$4
	local bin="$TOOLS_BIN/$name"
	if [[ -x $bin ]] && go version -m "$bin" 2>/dev/null |
		awk -v m="$module" -v v="$version" '$1 == "mod" && $2 == m && $3 == v { found = 1 } END { exit !found }'; then
		return 0
	fi
	log "building $name from $module@$version"
	mkdir -p "$TOOLS_BIN"
	# -mod=mod and an empty GOFLAGS keep a project-wide -mod=vendor or similar
	# from leaking into a module-mode install.
	(cd "$ROOT" && GOFLAGS= CGO_ENABLED=0 GOBIN="$TOOLS_BIN" go install "$pkg@$version")
}

# go_module_tool MODULE VERSION NAME... builds MODULE@VERSION's commands
# MODULE/cmd/NAME into .tools/bin, for modules that `go install` refuses
# because their go.mod has exclude or replace directives (which apply only to a
# main module). A throwaway module requires MODULE with MODULE's own exclude
# directives, so the build selects the dependency versions MODULE is tested
# with. Skipped when every binary already embeds MODULE at VERSION.
go_module_tool() {
	local module=$1 version=$2
	shift 2
	local name missing=()
	for name in "$@"; do
		if ! { [[ -x $TOOLS_BIN/$name ]] && go version -m "$TOOLS_BIN/$name" 2>/dev/null |
			awk -v m="$module" -v v="$version" '($1 == "mod" || $1 == "dep") && $2 == m && $3 == v { found = 1 } END { exit !found }'; }; then
			missing+=("$name")
		fi
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	log "building ${missing[*]} from $module@$version"
	mkdir -p "$TOOLS_BIN"
	local tmp rc=0
	tmp="$(mktemp -d)"
	(
		cd "$tmp"
		export GOFLAGS=-mod=mod CGO_ENABLED=0
		go mod init berth.invalid/tools >/dev/null 2>&1
		go mod edit -require="$module@$version"
		local dir
		dir="$(go mod download -json "$module@$version" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
		# Every "exclude path version" of MODULE's go.mod, one-line or in a block.
		awk '$1 == "exclude" && $2 == "(" { block = 1; next }
			block && $1 == ")" { block = 0; next }
			block && $1 !~ /^\/\// && NF >= 2 { print $1 "@" $2 }
			$1 == "exclude" && $2 != "(" { print $2 "@" $3 }' "$dir/go.mod" |
			while read -r ex; do go mod edit -exclude="$ex"; done
		local pkgs=()
		for name in "${missing[@]}"; do pkgs+=("$module/cmd/$name"); done
		go get "${pkgs[@]}"
		for name in "${missing[@]}"; do
			go build -trimpath -o "$TOOLS_BIN/$name" "$module/cmd/$name"
		done
	) || rc=$?
	rm -rf "$tmp"
	return "$rc"
}

ensure_go
if [[ $mode == run ]]; then
	apt_install "${RUN_PACKAGES[@]}"
	exit 0
fi

apt_install "${PACKAGES[@]}"
go_tool "$CONFORMANCE_MODULE" "$CONFORMANCE_VERSION" "$CONFORMANCE_MODULE" conformance
go_tool "$ORAS_MODULE" "$ORAS_VERSION" "$ORAS_MODULE/cmd/oras" oras
go_tool "$DISTRIBUTION_MODULE" "$DISTRIBUTION_VERSION" "$DISTRIBUTION_MODULE/cmd/registry" registry
go_tool "$STATICCHECK_MODULE" "$STATICCHECK_VERSION" "$STATICCHECK_MODULE/cmd/staticcheck" staticcheck
go_module_tool "$BUILDKIT_MODULE" "$BUILDKIT_VERSION" buildkitd buildctl
