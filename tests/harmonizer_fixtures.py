"""Shared pieces of the harmonizer tests (tests/test_harmonizer_*.py)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waiting on a shared 2-core machine. Import it into a test
    module (``from harmonizer_fixtures import single_thread``) to apply it to every test there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
