import os

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def one_openmp_thread():
    """torch's intra-op pool on one thread for the whole run: the tests' networks are too small
    to gain from threads, and on a shared machine two spinning threads per process made steps
    10-20x slower (measured at load 9 on 2 cores). threadpoolctl, not torch.set_num_threads,
    which would make batched LU unsafe (molfff/fff/linalg.py)."""
    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture
def float64():
    """Run a test in float64 (numerical identities)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=os.environ.get("MOLFFF_TEST_DEVICE", "cpu"),
        help="device for the tests marked `device` (cpu, cuda, cuda:1; env MOLFFF_TEST_DEVICE)",
    )


@pytest.fixture
def device(request) -> torch.device:
    """The device under test (``--device``); CUDA tests skip where CUDA is absent."""
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return dev


def pytest_collection_modifyitems(items):
    """Slow checks (training to convergence, full MCMC) get hours, not the default run's limit."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(4 * 3600))
