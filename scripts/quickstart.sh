#!/usr/bin/env bash
# A keygen -> publish -> verify round on a generated example model, in a scratch dir.
# Usage: bash scripts/quickstart.sh   (edgemesh must be on PATH, e.g. .venv/bin)
set -euo pipefail
work=$(mktemp -d "${TMPDIR:-/tmp}/edgemesh-quickstart.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
run() { printf '\n$ %s\n' "$*"; "$@"; }
run edgemesh example-model model.onnx --size-mb 8
run edgemesh keygen --out publisher.key
run edgemesh publish model.onnx --model demo --version 1 --key publisher.key --data-dir data
run edgemesh example-model model-v2.onnx --size-mb 8 --seed 1
run edgemesh publish model-v2.onnx --model demo --version 2 --key publisher.key --data-dir data
run edgemesh verify --model demo --data-dir data --trust publisher.key.pub
run edgemesh releases --data-dir data
printf '\n$ edgemesh publish model.onnx --model demo --version 2 ...   # not newer: refused\n'
if edgemesh publish model.onnx --model demo --version 2 --key publisher.key --data-dir data; then
  echo "unexpected: a stale version was accepted" >&2
  exit 1
fi
printf '\nquickstart ok (scratch dir %s removed)\n' "$work"
