"""MINIBOONE loading: MAF's split and normalisation, the raw UCI text path, every bad input."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from molfff.dense.tabular import (
    N_FEATURES,
    MiniBooNEError,
    load_miniboone,
    miniboone_splits,
    miniboone_task,
    preprocess_uci,
    split_sizes,
)
from molfff.errors import UserError

REPO = Path(__file__).resolve().parents[1]
FIXTURE_REL = "../shared/data/miniboone/miniboone_maf_first1523rows.npy"
FIXTURE = REPO / FIXTURE_REL
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"no fixture at {FIXTURE}")

# 0-based columns of the synthetic raw file whose minimum repeats (MAF drops them)
DROPPED = [3, 10, 17, 22, 30, 41, 49]


def test_split_sizes_follow_maf():
    assert split_sizes(36488) == (29556, 3284, 3648)  # the published MAF sizes
    assert split_sizes(1523) == (1234, 137, 152)
    assert split_sizes(11) == (9, 1, 1)


@needs_fixture
def test_fixture_loads_as_float64_43_columns():
    x = load_miniboone(FIXTURE)
    assert x.shape == (1523, N_FEATURES) and x.dtype == np.float64
    np.testing.assert_array_equal(x, np.load(FIXTURE))


@needs_fixture
def test_fixture_split_is_contiguous_and_normalised_with_train_val_rows():
    x = load_miniboone(FIXTURE)
    splits, norm = miniboone_splits(x)
    assert {k: len(s.x) for k, s in splits.items()} == {"train": 1234, "val": 137, "test": 152}
    assert all(s.x.dtype == torch.float32 and s.c is None for s in splits.values())
    ref = x[:1371]  # train + val rows, MAF's normalisation statistics
    np.testing.assert_allclose(norm.shift.numpy(), ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.scale.numpy(), ref.std(0), rtol=1e-12)  # ddof=0, as np.std
    for name, rows in (("train", x[:1234]), ("val", x[1234:1371]), ("test", x[1371:])):
        expected = (rows - ref.mean(0)) / ref.std(0)
        np.testing.assert_allclose(splits[name].x.numpy(), expected, rtol=1e-5, atol=1e-5)
    z = torch.cat([splits["train"].x, splits["val"].x]).double()
    torch.testing.assert_close(
        z.mean(0), torch.zeros(N_FEATURES, dtype=torch.float64), atol=1e-5, rtol=0
    )
    assert math.isclose(float(norm.log_abs_det), float(np.log(ref.std(0)).sum()), rel_tol=1e-12)
    back = norm.inverse(splits["test"].x.double())
    np.testing.assert_allclose(back.numpy(), x[1371:], rtol=1e-5, atol=1e-4 * x.std(0).max())


@needs_fixture
def test_statistics_never_see_test_rows():
    x = load_miniboone(FIXTURE)
    changed = x.copy()
    changed[1371:] = changed[1371:] * 7.0 + 3.0
    for stats in ("train+val", "train"):
        _, a = miniboone_splits(x, stats=stats)
        _, b = miniboone_splits(changed, stats=stats)
        torch.testing.assert_close(a.shift, b.shift, rtol=0, atol=0)
        torch.testing.assert_close(a.scale, b.scale, rtol=0, atol=0)
    _, train_only = miniboone_splits(x, stats="train")
    np.testing.assert_allclose(train_only.shift.numpy(), x[:1234].mean(0), rtol=1e-12)
    np.testing.assert_allclose(train_only.scale.numpy(), x[:1234].std(0), rtol=1e-12)


@needs_fixture
def test_task_caps_are_seeded_subsets_in_the_same_units():
    full = miniboone_task(FIXTURE, 10**6, 10**6, 10**6, seed=0)
    assert full.name == "miniboone" and full.particles is None
    assert [len(full.splits[k].x) for k in ("train", "val", "test")] == [1234, 137, 152]
    small = miniboone_task(FIXTURE, 100, 20, 30, seed=3)
    again = miniboone_task(FIXTURE, 100, 20, 30, seed=3)
    other = miniboone_task(FIXTURE, 100, 20, 30, seed=4)
    assert [len(small.splits[k].x) for k in ("train", "val", "test")] == [100, 20, 30]
    torch.testing.assert_close(small.splits["train"].x, again.splits["train"].x)
    assert not torch.equal(small.splits["train"].x, other.splits["train"].x)
    # capped rows are rows of the full split, in the same (MAF) units
    rows = {tuple(r) for r in full.splits["test"].x.tolist()}
    assert all(tuple(r) in rows for r in small.splits["test"].x.tolist())


@needs_fixture
def test_relative_root_resolves_from_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_miniboone(FIXTURE_REL).shape == (1523, N_FEATURES)
    folder = tmp_path / "miniboone"
    folder.mkdir()
    np.save(folder / "data.npy", np.load(FIXTURE)[:50])
    assert load_miniboone(folder).shape == (50, N_FEATURES)


@needs_fixture
def test_fast_config_trains_on_fixture(tmp_path):
    from molfff.train.config import load_config
    from molfff.train.dense import MiniBooNETask
    from molfff.train.runner import train
    from tests.helpers import QUIET

    cfg = load_config(
        "miniboone", QUIET + [f"run.root={tmp_path}", "trainer.max_epochs=1"], fast=True
    )
    assert cfg.data.name == "miniboone" and cfg.data.root == FIXTURE_REL
    data = miniboone_task(
        cfg.data.root, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test, cfg.seed
    )
    metrics = train(cfg, task=MiniBooNETask(cfg.data, cfg.seed, data)).metrics
    assert math.isfinite(metrics["nll_exact"]) and math.isfinite(metrics["reconstruction"])


# --- the raw UCI text ---------------------------------------------------------------------------


def synthetic_uci(n_signal=40, n_background=6, outliers=(5, 17), seed=0):
    """Lines of a MiniBooNE_PID.txt and the (N, 43) array MAF's preprocessing should give.

    Signal rows ``outliers`` hold the -999 marker; the columns ``DROPPED`` take values in
    {0, 1, 2, 3} with the minimum 0 in exactly 6 signal rows (6..11), so MAF drops them.
    """
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n_signal + n_background, 50)) * rng.uniform(0.1, 100, size=50)
    raw[:, 0] = np.abs(raw[:, 0])  # feature 0 < -100 marks an outlier row
    raw[:, DROPPED] = 1 + np.round(rng.uniform(0, 2, size=(len(raw), len(DROPPED))))
    raw[6:12, DROPPED] = 0.0
    raw[list(outliers)] = -999.0
    raw[n_signal:, 0] = 12345.0  # background rows: must not be read
    text = [f"{x:.5E}" for x in raw.ravel()]
    values = np.array([float(t) for t in text]).reshape(raw.shape)
    lines = [f"    {n_signal}    {n_background}"]
    lines += ["  ".join(text[i * 50 : (i + 1) * 50]) for i in range(len(raw))]
    keep = [i for i in range(n_signal) if i not in outliers]
    cols = [j for j in range(50) if j not in DROPPED]
    return lines, values[np.ix_(keep, cols)]


def write(tmp_path, lines, name="MiniBooNE_PID.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_uci_text_is_preprocessed_like_maf(tmp_path):
    lines, expected = synthetic_uci()
    x = load_miniboone(write(tmp_path, lines))
    assert x.shape == (38, N_FEATURES) and x.dtype == np.float64
    np.testing.assert_array_equal(x, expected)
    assert not (x == 12345.0).any() and not (x == -999.0).any()


def test_uci_text_feeds_the_task(tmp_path):
    lines, expected = synthetic_uci()
    task = miniboone_task(write(tmp_path, lines), 10**6, 10**6, 10**6, seed=0)
    assert [len(task.splits[k].x) for k in ("train", "val", "test")] == list(split_sizes(38))
    _, norm = miniboone_splits(expected)
    torch.testing.assert_close(task.splits["test"].x, norm(torch.from_numpy(expected[-3:])).float())


def test_outliers_are_dropped_before_the_feature_rule():
    raw = np.full((12, 50), -999.0)  # rows 6..11: outliers, whose -999 would repeat everywhere
    raw[:6] = np.random.default_rng(1).normal(size=(6, 50))
    raw[:6, DROPPED] = 0.0  # 6 > 5 repeats of the minimum
    assert preprocess_uci(raw).shape == (6, N_FEATURES)


def test_feature_rule_counts_the_minimum_not_the_mode():
    raw = np.random.default_rng(2).normal(size=(30, 50))
    raw[:, DROPPED] = np.abs(raw[:, DROPPED])
    raw[:6, DROPPED] = 0.0  # minimum repeated 6 times: dropped
    raw[:10, 0] = 100.0  # a repeated maximum: kept
    assert preprocess_uci(raw).shape == (30, N_FEATURES)
    raw[:6, DROPPED[0]] = np.arange(6.0) - 10  # now its minimum is unique: kept -> 44 features
    with pytest.raises(MiniBooNEError, match="keeps 44 of 50 features, expected 43"):
        preprocess_uci(raw)


# --- bad inputs ---------------------------------------------------------------------------------


def test_missing_file_and_missing_root(tmp_path):
    with pytest.raises(MiniBooNEError, match="not found"):
        load_miniboone(tmp_path / "nope.npy")
    with pytest.raises(MiniBooNEError, match="not found"):
        load_miniboone(tmp_path)  # a folder without data.npy or MiniBooNE_PID.txt
    with pytest.raises(UserError, match="data.root"):
        miniboone_task(None, 10, 10, 10, seed=0)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((100, 50)), r"shape \(100, 50\).*MiniBooNE_PID.txt"),
        (np.zeros((100, 42)), r"shape \(100, 42\); expected \(N, 43\)"),
        (np.zeros(43), r"shape \(43,\)"),
        (np.zeros((0, 43)), "empty"),
        (np.zeros((10, 43)), "10 usable rows.*at least 11"),
        (np.array([["a"] * 43] * 20), "dtype"),
    ],
)
def test_bad_npy(tmp_path, array, match):
    path = tmp_path / "data.npy"
    np.save(path, array)
    with pytest.raises(MiniBooNEError, match=match):
        load_miniboone(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_npy(tmp_path, bad):
    a = np.random.default_rng(0).normal(size=(30, 43))
    a[7, 3] = bad
    np.save(tmp_path / "data.npy", a)
    with pytest.raises(MiniBooNEError, match="1 of 30 rows with NaN or infinite.*row 7"):
        load_miniboone(tmp_path / "data.npy")


def test_unreadable_npy_and_unknown_suffix(tmp_path):
    (tmp_path / "data.npy").write_bytes(b"not numpy at all")
    with pytest.raises(MiniBooNEError, match="cannot read"):
        load_miniboone(tmp_path / "data.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object))
    with pytest.raises(MiniBooNEError, match="cannot read"):
        load_miniboone(tmp_path / "obj.npy")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(MiniBooNEError, match="unknown type '.csv'"):
        load_miniboone(tmp_path / "data.csv")


def test_constant_feature_cannot_be_normalised():
    a = np.random.default_rng(0).normal(size=(30, 43))
    a[:, 5] = 2.0
    with pytest.raises(MiniBooNEError, match="feature 5 is constant"):
        miniboone_splits(a)


def test_splits_check_their_input():
    with pytest.raises(ValueError, match=r"\(N, 43\)"):
        miniboone_splits(np.zeros((30, 44)))
    with pytest.raises(ValueError, match="NaN"):
        miniboone_splits(np.full((30, 43), np.nan))
    with pytest.raises(ValueError, match="stats"):
        miniboone_splits(np.random.default_rng(0).normal(size=(30, 43)), stats="all")


def _set_line(lines, lineno, text):
    out = list(lines)
    out[lineno - 1] = text
    return out


def _set_value(lines, lineno, col, token):
    tokens = lines[lineno - 1].split()
    tokens[col] = token
    return _set_line(lines, lineno, "  ".join(tokens))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda ls: [], "is empty"),
        (lambda ls: [""] + ls, "starts with a blank line"),
        (lambda ls: ls[1:], "line 1: expected the event counts.*header missing"),
        (lambda ls: ["36499 abc"] + ls[1:], "line 1: expected the event counts"),
        (lambda ls: ["0 5"] + ls[1:], "0 signal events"),
        (lambda ls: _set_value(ls, 9, 4, "1.2.3"), "line 9: cannot parse '1.2.3' .value 5."),
        (lambda ls: _set_line(ls, 4, ls[3] + " 1.0"), "line 4: expected 50 numbers, got 51"),
        (lambda ls: _set_line(ls, 6, ""), "line 6: expected 50 numbers, got 0"),
        (lambda ls: _set_value(ls, 12, 2, "nan"), "line 12: value 3 is 'nan'"),
        (lambda ls: _set_value(ls, 3, 0, "-inf"), "line 3: value 1 is '-inf'"),
        (lambda ls: ls[:21], "announces 40 signal events but the file ends after 20"),
    ],
)
def test_bad_text(tmp_path, mutate, match):
    lines, _ = synthetic_uci()
    path = tmp_path / "MiniBooNE_PID.txt"
    new = mutate(lines)
    path.write_text("\n".join(new) + ("\n" if new else ""))
    with pytest.raises(MiniBooNEError, match=match) as err:
        load_miniboone(path)
    assert isinstance(err.value, UserError)


def test_binary_text_file(tmp_path):
    (tmp_path / "MiniBooNE_PID.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(MiniBooNEError, match="not a text file"):
        load_miniboone(tmp_path / "MiniBooNE_PID.txt")


def test_text_with_wrong_feature_count_after_preprocessing(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(30, 50))  # no repeated minima: all 50 features kept
    text = ["30 0"] + ["  ".join(f"{v:.5E}" for v in row) for row in raw]
    with pytest.raises(MiniBooNEError, match="keeps 50 of 50 features, expected 43"):
        load_miniboone(write(tmp_path, text))


def test_all_rows_outliers(tmp_path):
    text = ["15 0"] + ["  ".join(["-999.0"] * 50)] * 15
    with pytest.raises(MiniBooNEError, match="all 15 signal rows are outliers"):
        load_miniboone(write(tmp_path, text))


def test_too_few_rows_after_outliers(tmp_path):
    lines, _ = synthetic_uci(n_signal=14, n_background=0, outliers=(1, 2, 3, 4))
    with pytest.raises(MiniBooNEError, match="10 usable rows"):
        load_miniboone(write(tmp_path, lines))
