"""Test helper: llama.cpp's OpenAI-compatible ``/v1/embeddings`` over a GGUF, on 127.0.0.1.

``python llama_embeddings_server.py MODEL.gguf API_KEY ALIAS`` serves the model through
xllamacpp in embeddings mode (mean pooling, one CPU thread) on a free port, prints its address
(``http://127.0.0.1:PORT``) on one line, and serves until its stdin is closed.
"""

from __future__ import annotations

import sys

import xllamacpp

N_CTX = 2048  # tokens per request: a whole chunk must fit in one batch to be embedded


def main(model: str, api_key: str, alias: str) -> None:
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {alias}
    params.embedding = True
    params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = [api_key]
    params.n_parallel = 1
    params.n_ctx = params.n_batch = params.n_ubatch = N_CTX
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
    server = xllamacpp.Server(params)
    print(server.listening_address, flush=True)
    sys.stdin.read()
    del server


if __name__ == "__main__":
    main(*sys.argv[1:4])
