#!/usr/bin/env bash
# fuzz.sh: run every Go fuzz target in the module for FUZZ_TIME (default 10s).
# Go fuzzes one target per `go test` call, so each Fuzz* function found in a
# _test.go file gets its own run; the first failure stops the script, leaving
# the crashing input in that package's testdata/fuzz for `go test` to replay.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ_TIME="${FUZZ_TIME:-10s}"

targets=0
while IFS= read -r file; do
	dir="./$(dirname "$file")"
	while IFS= read -r name; do
		targets=$((targets + 1))
		echo "== $dir $name ($FUZZ_TIME)"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZ_TIME" "$dir"
	done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F).*/\1/p' "$file")
done < <(grep -rl --include='*_test.go' --exclude-dir=.tools --exclude-dir=.git -E '^func Fuzz[A-Za-z0-9_]*\(' . | sed 's|^\./||' | sort)

echo "fuzz: $targets targets ran for $FUZZ_TIME each"
