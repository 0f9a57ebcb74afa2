"""Measuring tools for the benchmarks: time inside model forward passes, latency
percentiles, peak memory and size on disk."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class ForwardTimer:
    """Sums the wall-clock seconds spent inside the ``forward`` of the given torch modules.

    Hooks are registered on each module (``register_forward_pre_hook`` starts a clock,
    ``register_forward_hook`` stops it); give top-level modules only, never a module and one
    of its children, or their time is counted twice. Use as a context manager: the hooks are
    removed on exit.

    Attributes:
        seconds: total seconds inside the hooked forward passes.
        calls: number of forward passes.
    """

    def __init__(self, modules: Iterable[object]) -> None:
        self.modules = list(modules)
        self.seconds = 0.0
        self.calls = 0
        self._started: dict[int, float] = {}
        self._handles: list = []

    def __enter__(self) -> ForwardTimer:
        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._start))
            self._handles.append(module.register_forward_hook(self._stop))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start(self, module, args) -> None:
        self._started[id(module)] = time.perf_counter()

    def _stop(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._started.pop(id(module))
        self.calls += 1


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """``p50``, ``p95``, ``p99`` and ``mean`` of latencies in milliseconds (numpy's linear
    interpolation between order statistics).

    Raises:
        ValueError: no samples.
    """
    if not samples_ms:
        raise ValueError("no latency samples")
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "mean_ms": round(float(values.mean()), 1),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage``; Linux reports
    KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_peak_rss_mb() -> float:
    """Peak resident memory of the largest child process that has ended, in MiB: the Milvus
    Lite 2.5 engine, read after the store is closed (``getrusage(RUSAGE_CHILDREN)``)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def size_on_disk_mb(path: str | Path) -> float:
    """Bytes under ``path`` (a Milvus Lite ``*.db`` directory or a file), in MiB."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 2**20
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total / 2**20
