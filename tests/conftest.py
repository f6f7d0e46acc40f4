import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in float64 (numerical identities)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def pytest_collection_modifyitems(items):
    """Slow checks (training to convergence, full MCMC) get hours, not the default run's limit."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(4 * 3600))
