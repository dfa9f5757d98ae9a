#!/usr/bin/env bash
# Regenerates the Go code of berth's .proto files with pinned generators, so
# that `scripts/gen-proto.sh --check` (run by `make test`) is stable.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.5.1
PROTOC_VERSION="libprotoc 3.21.12"   # Debian bookworm's protobuf-compiler
bin="$PWD/.tools/bin"
mkdir -p "$bin"
if ! command -v protoc >/dev/null; then
	apt-get install -y -qq protobuf-compiler >/dev/null
fi
if [[ "$(protoc --version)" != "$PROTOC_VERSION" ]]; then
	echo "gen-proto: need $PROTOC_VERSION, have $(protoc --version)" >&2
	exit 1
fi
[[ "$("$bin/protoc-gen-go" --version 2>/dev/null)" == "protoc-gen-go $PROTOC_GEN_GO" ]] ||
	GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
[[ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" == "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC#v}" ]] ||
	GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"

out="$PWD"
if [[ "${1:-}" == "--check" ]]; then
	out="$(mktemp -d)"
	trap 'rm -rf "$out"' EXIT
fi
for proto in buildmanager/workerpb/worker.proto; do
	dir="$(dirname "$proto")"
	mkdir -p "$out/$dir"
	PATH="$bin:$PATH" protoc -I "$dir" \
		--go_out=paths=source_relative:"$out/$dir" \
		--go-grpc_out=paths=source_relative:"$out/$dir" "$proto"
	if [[ "${1:-}" == "--check" ]]; then
		for f in "$out/$dir"/*.go; do
			if ! cmp -s "$f" "$dir/$(basename "$f")"; then
				echo "gen-proto: $dir/$(basename "$f") is stale; run scripts/gen-proto.sh" >&2
				exit 1
			fi
		done
	fi
done
