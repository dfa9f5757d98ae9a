#!/usr/bin/env bash
# build.sh REGISTRY/NAMESPACE/REPOSITORY:TAG — berth builds its own worker
# image (`make worker-image WORKER_IMAGE=…` runs this from the module root).
#
#  1. base.sh makes the Debian base and pushes it into the same berth, as
#     $WORKER_BASE (default: the image's repository with "-base", tag bookworm);
#  2. berth is built (CGO_ENABLED=0) into a fresh build context beside the
#     Containerfile, with buildkitd/buildctl when .tools/bin has them;
#  3. `berth build` uploads that context to the berth serving REGISTRY, which
#     builds it with its own build manager and pushes the result to the image
#     name; the log streams here.
#
# The berth at REGISTRY (or $BERTH_SERVER) must be running, with a build
# manager, and the caller logged in to it: `podman login` (or
# $REGISTRY_AUTH_FILE) or an access token in $BERTH_TOKEN.
#
# With WORKER_IMAGE_SERVE=1 and a loopback REGISTRY this script starts that
# berth itself for the build — `bin/berth serve` on REGISTRY's address with
# the data directory $WORKER_IMAGE_DATA (default /var/tmp/berth-worker-image),
# the embedded defaults and a local executor, and a superuser named after
# the image's namespace — then stops it. The image stays in the data directory: serve it again with
#   bin/berth serve --listen REGISTRY --data-dir $WORKER_IMAGE_DATA
set -euo pipefail

[[ $# -eq 1 && $1 == */*/* ]] || { echo "usage: $0 REGISTRY/NAMESPACE/REPOSITORY:TAG" >&2; exit 2; }
image=$1
host=${image%%/*}
path=${image#*/}
repo=${path%%[:@]*}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
base=${WORKER_BASE:-$host/$repo-base:bookworm}

tmp=$(mktemp -d)
ctx=$tmp/context
server_pid=
cleanup() {
	rm -rf "$tmp"
	if [[ -n $server_pid ]]; then
		kill -TERM "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT

echo "worker-image: building berth" >&2
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$ctx/bin/berth" ./cmd/berth)
cp "$here/Containerfile" "$ctx/Containerfile"
for tool in buildkitd buildctl; do
	if [[ -x $root/.tools/bin/$tool ]]; then
		cp "$root/.tools/bin/$tool" "$ctx/bin/$tool"
		echo "worker-image: adding $tool from .tools/bin" >&2
	else
		echo "worker-image: no .tools/bin/$tool (scripts/install-deps.sh builds it): the image gets buildah only" >&2
	fi
done

if [[ ${WORKER_IMAGE_SERVE:-} == 1 ]]; then
	case $host in
	localhost:* | 127.*:*) ;;
	*) echo "worker-image: WORKER_IMAGE_SERVE=1 needs a loopback registry, not $host" >&2; exit 2 ;;
	esac
	data=${WORKER_IMAGE_DATA:-/var/tmp/berth-worker-image}
	mkdir -p "$data"
	chmod 700 "$data"
	# The superuser is created on the first start; its password is kept
	# beside the data for the later ones.
	[[ -s $data/admin-password ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$data/admin-password"
	password=$(<"$data/admin-password")
	cat >"$data/config.yaml" <<-'EOF'
	BUILD_MANAGER:
	- ephemeral
	- ALLOWED_WORKER_COUNT: 1
	  BUILD_TIME_LIMIT: 1800
	  EXECUTORS:
	  - EXECUTOR: local
	    NAME: local
	EOF
	user=${repo%%/*}
	BERTH_ADMIN_USER=$user BERTH_ADMIN_PASSWORD=$password \
		"$ctx/bin/berth" serve --listen "$host" --data-dir "$data/data" --config "$data/config.yaml" \
		>>"$data/server.log" 2>&1 &
	server_pid=$!
	for _ in $(seq 600); do
		curl -fsS -o /dev/null "http://$host/health/instance" 2>/dev/null && break
		kill -0 "$server_pid" 2>/dev/null || { tail -20 "$data/server.log" >&2; exit 1; }
		sleep 0.1
	done
	printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$host" "$(printf '%s:%s' "$user" "$password" | base64 -w0)" >"$tmp/auth.json"
	export REGISTRY_AUTH_FILE=$tmp/auth.json
	echo "worker-image: berth serving $host from $data (log $data/server.log)" >&2
fi

"$here/base.sh" "$base"

echo "worker-image: berth build of $image on top of $base" >&2
"$ctx/bin/berth" build -f "$ctx/Containerfile" --build-arg BASE="$base" -t "$image" "$ctx"
