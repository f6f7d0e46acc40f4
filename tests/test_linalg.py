"""Batched LU that finishes and is right after the thread count changed (PyTorch issue 141358)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from molfff.fff import linalg
from molfff.fff.logdet import log_abs_det_jacobian

# A fresh process: change the thread count, then molfff's exact log-det on a batch of Jacobians the
# size of a QM9 molecule's (240 rows). On torch 2.13's CPU build the plain batched slogdet hangs
# here, printing "Intel oneMKL ERROR: Parameter 6 was incorrect on entry to SLASWP".
REPRO = textwrap.dedent(
    """
    import numpy as np, torch
    from molfff.fff import linalg
    from molfff.fff.logdet import log_abs_det_jacobian
    torch.set_num_threads(1); torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 240, 240, generator=g, dtype=torch.float64)
    got = linalg.logabsdet(a).numpy()
    want = np.linalg.slogdet(a.numpy())[1]
    assert np.abs(got - want).max() < 1e-9, np.abs(got - want).max()
    w = torch.randn(240, 240, generator=g)  # float32, as in training
    jac = log_abs_det_jacobian(lambda x, c, layout: x @ w.T, torch.randn(4, 240, generator=g))
    want = np.linalg.slogdet(w.double().numpy())[1]
    assert np.abs(jac.double().numpy() - want).max() < 1e-2, (jac, want)
    x = linalg.solve(a, a[:, :, 0])  # the first column of a: x = e_1
    assert (x[:, 0] - 1).abs().max() < 1e-9 and x[:, 1:].abs().max() < 1e-9
    print("ok")
    """
)


def test_batched_lu_after_thread_change_finishes_with_right_values():
    try:
        out = subprocess.run(
            [sys.executable, "-c", REPRO], capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        pytest.fail("batched log-det hung after torch.set_num_threads (PyTorch issue 141358)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout
    assert "MKL ERROR" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("m", [3, linalg.BATCHED_MAX_ROWS + 8])  # batched and per-matrix paths
def test_logabsdet_and_solve_match_float64_reference(m):
    g = torch.Generator().manual_seed(m)
    a = torch.randn(5, m, m, generator=g, dtype=torch.float64)
    b = torch.randn(5, m, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(linalg.logabsdet(a), np.linalg.slogdet(a.numpy())[1], rtol=1e-12)
    want = np.linalg.solve(a.numpy(), b.numpy()[..., None])[..., 0]
    np.testing.assert_allclose(linalg.solve(a, b), want, rtol=1e-9, atol=1e-11)
    # leading batch dimensions are kept
    assert linalg.logabsdet(a.reshape(5, 1, m, m)).shape == (5, 1)


@pytest.mark.parametrize("m", [2, linalg.BATCHED_MAX_ROWS + 1])
def test_logabsdet_gradient_is_inverse_transpose(m):
    """d log|det A| / dA = A^{-T} on both paths (float64)."""
    a = torch.randn(3, m, m, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a.requires_grad_(True)
    linalg.logabsdet(a).sum().backward()
    torch.testing.assert_close(a.grad, torch.linalg.inv(a.detach()).mT)


def test_singular_and_bad_shapes():
    a = torch.zeros(2, 40, 40, dtype=torch.float64)
    a[0] = torch.eye(40)
    got = linalg.logabsdet(a)
    assert got[0] == 0 and got[1] == -torch.inf
    with pytest.raises(ValueError, match="square"):
        linalg.logabsdet(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="solve needs"):
        linalg.solve(torch.eye(3).expand(2, 3, 3), torch.zeros(3, 3))


def test_log_abs_det_jacobian_uses_the_safe_path():
    m = linalg.BATCHED_MAX_ROWS + 16  # the per-matrix path
    w = torch.randn(m, m, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = log_abs_det_jacobian(lambda x, c, layout: x @ w.T, torch.zeros(3, m, dtype=torch.float64))
    torch.testing.assert_close(got, torch.linalg.slogdet(w).logabsdet.expand(3))


def test_empty_batch_of_large_matrices():
    """An empty batch gives an empty result on both paths (stacking no matrices used to fail)."""
    m = linalg.BATCHED_MAX_ROWS + 8
    assert linalg.logabsdet(torch.zeros(0, m, m)).shape == (0,)
    assert linalg.logabsdet(torch.zeros(2, 0, m, m)).shape == (2, 0)
    assert linalg.solve(torch.zeros(0, m, m), torch.zeros(0, m)).shape == (0, m)
