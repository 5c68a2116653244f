"""The shared fixtures of the library's tests (per-test seeds, one thread, the tiny random pipelines)."""

from tests.conftest import _one_thread, _seed_torch, tiny_pipe

__all__ = ["_one_thread", "_seed_torch", "tiny_pipe"]
