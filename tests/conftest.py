from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import studio


@pytest.fixture(scope="session")
def samples() -> dict[str, studio.samples.Sample]:
    return {name: studio.load_sample(name) for name in studio.list_samples()}


@pytest.fixture(scope="session")
def mlp_session(samples) -> studio.Session:
    sample = samples["digits-mlp"]
    return studio.Session(sample.model, sample.eval_data)


@pytest.fixture(scope="session")
def cnn_session(samples) -> studio.Session:
    sample = samples["digits-cnn"]
    return studio.Session(sample.model, sample.eval_data)


@pytest.fixture
def tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(40, 8)
    y = model(x).argmax(1)
    return model, (x, y)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of many small passes: faster on a shared machine, and the
    results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
