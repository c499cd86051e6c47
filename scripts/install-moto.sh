#!/usr/bin/env bash
# Installs moto's S3 stand-in (`moto_server`: pinned `moto[s3]` plus the Flask it serves with,
# from PyPI; not `moto[server]`, which brings every AWS service's dependencies, 2.3x the size)
# into its own virtualenv under .tools/venv-moto/, for the test that runs tansu on persistent
# S3 storage (tests/tests/broker_restart.rs). Idempotent: does nothing when it is already
# installed. Prints the path of moto_server. See README.md, "Test brokers".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$root/.tools/pip-cache}"
venv="$root/.tools/venv-moto"
bin="$venv/bin/moto_server"
version="5.2.1"
if [ -x "$bin" ] && "$venv/bin/python" -c "import moto, flask_cors, sys; sys.exit(moto.__version__ != '$version')" 2>/dev/null; then
  echo "$bin"; exit 0
fi
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "moto[s3]==$version" "flask==3.1.3" "flask-cors==6.0.5" >&2
echo "$bin"
