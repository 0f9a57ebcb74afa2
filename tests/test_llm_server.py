"""The local LLM server: `python -m rag serve-llm` (xllamacpp, packaged SmolLM2-135M GGUF)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rag.answer import LLM
from rag.llm_server import DEFAULT_ALIAS, model_path

REPO = Path(__file__).resolve().parents[1]


def test_model_path_finds_the_packaged_gguf_and_names_what_is_missing(tmp_path):
    path = model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert model_path(str(path)) == path
    with pytest.raises(FileNotFoundError, match="no GGUF model 'nope.gguf'"):
        model_path("nope.gguf")
    with pytest.raises(FileNotFoundError):
        model_path(str(tmp_path))  # a directory is no model file


def test_serve_llm_with_a_missing_model_exits_with_a_message():
    done = subprocess.run(
        [sys.executable, "-m", "rag", "serve-llm", "--model", "/nonexistent/model.gguf"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no GGUF model '/nonexistent/model.gguf'" in " ".join(done.stderr.split())


@pytest.mark.slow
def test_the_server_lists_its_model_and_chats(local_llm):
    with urllib.request.urlopen(f"{local_llm}/models", timeout=10) as response:
        models = json.load(response)
    assert [m["id"] for m in models["data"]] == [DEFAULT_ALIAS]

    llm = LLM(local_llm, max_tokens=8)  # no model id: the endpoint's first one
    text = "".join(llm.stream([{"role": "user", "content": "Say hello."}]))
    assert text.strip() and llm.model == DEFAULT_ALIAS


@pytest.mark.slow
def test_serve_llm_stops_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "rag", "serve-llm", "--port", "0", "--threads", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serving SmolLM2-135M-Instruct-GGUF on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
