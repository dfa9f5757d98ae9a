#!/usr/bin/env bash
# base.sh REF: make the worker image's base from Debian packages alone and
# push it to REF as a one-layer image.
#
# No public base image can be pulled where berth is built, so the root file
# system comes from Debian 12's archive through mmdebstrap (debootstrap when
# mmdebstrap cannot be installed). It is cached as a tar under
# $WORKER_BASE_CACHE (default /var/cache/berth/worker-base), keyed by this
# script's own content: the same script never bootstraps twice, and any
# change to the package list or the trimming makes a new one. Delete the
# cache directory to pick up newer Debian packages.
#
# Environment:
#   WORKER_BASE_CACHE   the cache directory (default /var/cache/berth/worker-base)
#   DEBIAN_MIRROR       the archive (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY     the security archive (default http://deb.debian.org/debian-security)
#   BERTH_TOKEN         an access token to push with ("$oauthtoken" login);
#                       otherwise buildah's stored login ($REGISTRY_AUTH_FILE, podman login)
#   TLS_VERIFY          true or false; default false for a loopback registry, else true
set -euo pipefail

usage() { echo "usage: $0 REGISTRY/NAMESPACE/REPOSITORY:TAG" >&2; exit 2; }
[[ $# -eq 1 && $1 == */*/* ]] || usage
ref=$1
host=${ref%%/*}

suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
cache=${WORKER_BASE_CACHE:-/var/cache/berth/worker-base}

# What the worker runs, each package for one reason (README.md says more;
# worker/sandbox.Programs is what the worker's preflight requires):
#   buildah          the build engine
#   runc             the OCI runtime of the sandbox's checks and of RUN steps under oci isolation
#   uidmap           setuid newuidmap/newgidmap: the sandbox's user namespace from /etc/subuid
#   rootlesskit      makes each build's sandbox (user, PID, network namespaces); wraps rootless buildkitd
#   slirp4netns      the sandbox network's only way out
#   iproute2         `ip`: the sandbox's route check and rootlesskit's interface setup
#   git              fetching build sources
#   ca-certificates  TLS to registries and git servers
#   fuse-overlayfs   overlay storage without root where /dev/fuse is given
#   passwd           useradd, for the worker user the Containerfile adds
#   skopeo           the BuildKit engine's pulls and pushes, outside its sandbox
packages=buildah,runc,uidmap,rootlesskit,slirp4netns,iproute2,git,ca-certificates,fuse-overlayfs,passwd,skopeo

# Documentation, manuals and translations are not needed in a build worker;
# the copyright files stay, as Debian's licences ask.
dpkg_trim=(
	'path-exclude=/usr/share/doc/*'
	'path-include=/usr/share/doc/*/copyright'
	'path-exclude=/usr/share/man/*'
	'path-exclude=/usr/share/info/*'
	'path-exclude=/usr/share/locale/*'
	'path-include=/usr/share/locale/locale.alias'
	'path-exclude=/usr/share/lintian/*'
)
# mmdebstrap already empties the apt lists and archives; this drops the
# logs and caches the installation leaves behind ($1 is the new root).
cleanup='rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/cache/ldconfig/aux-cache "$1"/var/cache/debconf/*-old'

tls_verify=${TLS_VERIFY:-}
if [[ -z $tls_verify ]]; then
	case $host in
	localhost | localhost:* | 127.* | \[::1\] | \[::1\]:*) tls_verify=false ;;
	*) tls_verify=true ;;
	esac
fi

key=$(printf '%s\n' "$suite" "$mirror" "$security" "$packages" "${dpkg_trim[@]}" "$cleanup" | sha256sum | cut -c1-16)
dir=$cache/$key
rootfs=$dir/rootfs.tar
mkdir -p "$dir"
# One run at a time per key: a second waits and then reuses the first's work.
exec 9>"$dir/lock"
flock 9

# bootstrap writes the root file system of Debian $suite with $packages to
# the tar $1.
bootstrap() {
	local out=$1
	if ! command -v mmdebstrap >/dev/null && ! command -v debootstrap >/dev/null; then
		echo "base.sh: installing mmdebstrap" >&2
		if ! { apt-get install -y --no-install-recommends mmdebstrap ||
			{ apt-get update && apt-get install -y --no-install-recommends mmdebstrap; } ||
			apt-get install -y --no-install-recommends debootstrap; } >&2; then
			echo "base.sh: neither mmdebstrap nor debootstrap could be installed" >&2
			return 1
		fi
	fi
	if command -v mmdebstrap >/dev/null; then
		local opts=()
		for o in "${dpkg_trim[@]}"; do opts+=(--dpkgopt="$o"); done
		mmdebstrap --variant=minbase --include="$packages" "${opts[@]}" --customize-hook="$cleanup" \
			"$suite" "$out" \
			"deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
		return
	fi
	# debootstrap: into a directory, trimmed by hand, then packed.
	local root=$dir/root
	rm -rf "$root"
	mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
	printf '%s\n' "${dpkg_trim[@]}" >"$root/etc/dpkg/dpkg.cfg.d/berth-trim"
	debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror"
	printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
		"$mirror" "$suite" "$mirror" "$suite" "$security" "$suite" >"$root/etc/apt/sources.list"
	(set -- "$root" && eval "$cleanup")
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
		"$root"/var/log/bootstrap.log
	tar --numeric-owner --xattrs --acls -C "$root" -cf "$out" .
	rm -rf "$root"
}

if [[ -s $rootfs ]]; then
	echo "base.sh: reusing $rootfs" >&2
else
	echo "base.sh: bootstrapping Debian $suite into $rootfs" >&2
	bootstrap "$rootfs.partial"
	mv "$rootfs.partial" "$rootfs"
fi

# The image is committed in a storage of its own beside the cache, so that
# nothing here touches the caller's containers.
store=(--root "$dir/storage" --runroot "$dir/run" --storage-driver vfs)
image=localhost/berth-worker-base:$key
if ! buildah "${store[@]}" inspect --type image "$image" >/dev/null 2>&1; then
	ctr=$(buildah "${store[@]}" from scratch)
	trap 'buildah "${store[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
	buildah "${store[@]}" add "$ctr" "$rootfs" /
	buildah "${store[@]}" config \
		--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--cmd /bin/bash \
		--label org.opencontainers.image.description="berth worker base: Debian $suite with $packages" \
		"$ctr"
	buildah "${store[@]}" commit --rm "$ctr" "$image" >/dev/null
	trap - EXIT
fi

push=(--tls-verify="$tls_verify")
if [[ -n ${BERTH_TOKEN:-} ]]; then
	push+=(--creds "\$oauthtoken:$BERTH_TOKEN")
fi
buildah "${store[@]}" push "${push[@]}" "$image" "docker://$ref" >&2
echo "base.sh: pushed $image to $ref" >&2
