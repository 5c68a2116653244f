"""Shared fixtures: a per-test seed, a numpy generator, the tiny random Llama backbone and the tiny random
diffusers pipelines."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
import torch

import lineas
from tests.helpers import fair_threads


def _seed_of(request: pytest.FixtureRequest) -> int:
    # Reproducible, but different data for every test.
    return zlib.crc32(request.node.nodeid.encode()) % (2**31)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The models here are tiny: one intra-op thread is as fast, and far faster on a busy 2-core machine
    (idle worker threads spin against the other processes). The processes tests start get this worker's share
    of the cores (OMP_NUM_THREADS, unless it is set)."""
    saved, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", str(fair_threads()))
    yield
    torch.set_num_threads(saved)
    if env is None:
        del os.environ["OMP_NUM_THREADS"]


@pytest.fixture
def all_threads():
    """Every core this test's worker may use (for the real SmolLM2 weights; the session default is one thread):
    all of them on one worker, an equal share under pytest-xdist (more threads than cores spin against each
    other)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(fair_threads())
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _seed_torch(request: pytest.FixtureRequest) -> None:
    torch.manual_seed(_seed_of(request))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return np.random.default_rng(_seed_of(request))


@pytest.fixture(scope="session")
def tiny_llama() -> lineas.CausalLM:
    """A random 4-layer, hidden-64 Llama with the SmolLM2 tokenizer (built once, cached on disk by
    lineas.models.cache)."""
    return lineas.CausalLM("tiny:llama")


@pytest.fixture(scope="session", params=["sd", "flux"])
def tiny_pipe(request: pytest.FixtureRequest) -> lineas.DiffusionPipe:
    """A tiny random text-to-image pipeline, offline: a UNet one (``tiny:sd``) and a FLUX one (``tiny:flux``)."""
    return lineas.DiffusionPipe(f"tiny:{request.param}")


@pytest.fixture
def no_hooks_left():
    """Check, after the test, that no forward hooks remain on the given model."""
    models: list[torch.nn.Module] = []
    yield models.append
    for model in models:
        leftover = [n for n, m in model.named_modules() if m._forward_hooks]
        assert not leftover, f"forward hooks left on {leftover}"


@pytest.fixture
def source_batch(tiny_llama):
    """Four right-padded source prompts of different lengths."""
    return tiny_llama.collate(
        [
            "I hate this so much, it is awful.",
            "You are a terrible person.",
            "What a horrible, rotten day.",
            "Go away",
        ]
    )


@pytest.fixture
def target_batch(tiny_llama):
    """Five target prompts (a different count from the source on purpose)."""
    return tiny_llama.collate(
        [
            "I love this, it is wonderful.",
            "You are a kind person.",
            "What a lovely and sunny day it has been today.",
            "Please stay a while with us.",
            "Thank you.",
        ]
    )
