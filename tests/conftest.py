import os

import pytest
import torch


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
