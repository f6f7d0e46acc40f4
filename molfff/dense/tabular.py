"""MINIBOONE as in Papamakarios, Pavlakou, Murray (2017), "Masked Autoregressive Flow" (MAF).

Two inputs give the same ``(N, 43)`` float64 array of raw (un-normalised) features:

- the MAF data release's ``miniboone/data.npy``: already preprocessed *except* the normalisation
  (its values are in physical units; 36,488 rows), read as is;
- the UCI file ``MiniBooNE_PID.txt``, preprocessed here as MAF did.

Preprocessing of the UCI file (MAF ``datasets/miniboone.py``; there it survives as a commented
"how the pre-processing was done" note, and the public re-creations of it agree):

1. Line 1 holds two counts, ``n_signal n_background``; the next ``n_signal`` lines are the signal
   (electron-neutrino) events, the rest background. MAF keeps only the signal events
   (36,499 in the UCI file); the background lines are not read.
2. Rows whose first feature is below -100 (the -999 "missing" marker) are dropped.
3. Every feature whose *smallest* value occurs more than 5 times is dropped (MAF counts the values
   of each feature and takes the count of the first key in sorted order, i.e. of the minimum;
   the comment calls these "features that have too many re-occurring real values"). The
   remaining 43 of the 50 features are kept in file order. The rule is applied to the signal rows
   after step 2, before splitting, as MAF does; a file for which it does not leave 43 features is
   rejected.

36,499 signal events less the outlier rows give the 36,488 rows of ``data.npy``. Values parsed
here agree with ``data.npy`` to the last bit or so: MAF parsed with pandas' fast float parser,
which is not always correctly rounded (the array holds e.g. ``0.8937219999999999`` for
``0.893722``).

Split (MAF ``load_data``), by row order, no shuffling::

    n_test  = int(0.1 * N)            # the last n_test rows
    n_val   = int(0.1 * (N - n_test)) # the last n_val rows of the rest
    n_train = N - n_test - n_val      # the first rows

which gives 29,556 / 3,284 / 3,648 rows for N = 36,488, the sizes published for MAF (and reused
by later work, e.g. Neural Spline Flows).

Normalisation (MAF ``load_data_normalised``): every split is z-scored with the mean and the
standard deviation (``np.std``, i.e. ``ddof=0``) of the training *and* validation rows together;
the test rows never enter the statistics. MAF then casts to float32. Published MINIBOONE
log-likelihoods are in these normalised units, so :func:`miniboone_task` returns the splits in
them; ``NLL_raw = NLL_normalised + sum(log std)``
(:attr:`~molfff.fff.standardize.Standardize.log_abs_det`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molfff.dense.splits import DenseData, Split
from molfff.errors import UserError
from molfff.fff.standardize import Standardize

N_FEATURES = 43
N_RAW_FEATURES = 50
OUTLIER_BELOW = -100.0  # MAF: rows with feature 0 < -100 carry the -999 marker
MAX_MIN_COUNT = 5  # MAF: a feature whose minimum repeats more often than this is dropped
MIN_ROWS = 11  # the smallest N for which the standard split leaves >= 1 val and test row
REPO_ROOT = Path(__file__).resolve().parents[2]
DIR_CANDIDATES = ("data.npy", "MiniBooNE_PID.txt")


class MiniBooNEError(UserError, ValueError):
    """A MINIBOONE file that is missing, unreadable, or not what the loader expects."""


def resolve_path(path: str | Path) -> Path:
    """The MINIBOONE file ``path`` names.

    A relative path is looked up from the working directory, then from the repository root (so
    configs can name files relative to the repository wherever the command runs). A folder is
    searched for ``data.npy``, then ``MiniBooNE_PID.txt``.

    Raises:
        MiniBooNEError: when no file is found; the message names every path tried.
    """
    given = Path(path).expanduser()
    bases = [given] if given.is_absolute() else [given, REPO_ROOT / given]
    tried = []
    for base in bases:
        if base.is_dir():
            for name in DIR_CANDIDATES:
                tried.append(base / name)
                if tried[-1].is_file():
                    return tried[-1]
        else:
            tried.append(base)
            if base.is_file():
                return base
    raise MiniBooNEError(
        f"MINIBOONE file {path} not found (tried {', '.join(str(p) for p in tried)}); "
        "give the MAF data.npy or the UCI MiniBooNE_PID.txt"
    )


def load_miniboone(path: str | Path) -> np.ndarray:
    """The preprocessed MINIBOONE features, ``(N, 43)`` float64, in raw (un-normalised) units.

    Args:
        path: MAF's ``data.npy`` (read as is), the UCI ``MiniBooNE_PID.txt`` (preprocessed as MAF
            did, see the module docstring), or a folder holding one of them.

    Raises:
        MiniBooNEError: (a ``UserError``) for a missing, unreadable, empty or malformed file
            (text errors name the line), a shape other than ``(N, 43)`` after preprocessing,
            NaN or infinite values, or fewer than 11 rows (too few for the standard split).
    """
    file = resolve_path(path)
    if file.suffix == ".npy":
        x = _read_npy(file)
    elif file.suffix == ".txt":
        x = preprocess_uci(read_uci_signal(file), source=str(file))
    else:
        raise MiniBooNEError(
            f"MINIBOONE file {file}: unknown type {file.suffix or '(no suffix)'!r}; "
            "expected .npy (MAF data.npy) or .txt (UCI MiniBooNE_PID.txt)"
        )
    if x.shape[0] < MIN_ROWS:
        raise MiniBooNEError(
            f"MINIBOONE file {file} has {x.shape[0]} usable rows; the standard split needs at "
            f"least {MIN_ROWS}"
        )
    return x


def _read_npy(file: Path) -> np.ndarray:
    try:
        a = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise MiniBooNEError(f"cannot read MINIBOONE file {file} as .npy: {err}") from None
    if not isinstance(a, np.ndarray):
        raise MiniBooNEError(f"MINIBOONE file {file} holds an archive, not one array")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise MiniBooNEError(f"MINIBOONE file {file} has dtype {a.dtype}; expected real numbers")
    if a.ndim != 2 or a.shape[1] != N_FEATURES:
        hint = (
            "; this looks like the raw 50 UCI features: give MiniBooNE_PID.txt instead"
            if a.ndim == 2 and a.shape[1] == N_RAW_FEATURES
            else ""
        )
        raise MiniBooNEError(
            f"MINIBOONE file {file} has shape {a.shape}; expected (N, {N_FEATURES}), "
            f"the MAF-preprocessed array{hint}"
        )
    if a.shape[0] == 0:
        raise MiniBooNEError(f"MINIBOONE file {file} is empty (shape {a.shape})")
    a = np.ascontiguousarray(a, dtype=np.float64)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise MiniBooNEError(
            f"MINIBOONE file {file} has {int(bad.sum())} of {a.shape[0]} rows with NaN or "
            f"infinite values (first: row {int(np.argmax(bad))})"
        )
    return a


def read_uci_signal(path: str | Path) -> np.ndarray:
    """The signal events of the UCI ``MiniBooNE_PID.txt``: ``(n_signal, 50)`` float64, unfiltered.

    Line 1 is ``n_signal n_background``; lines ``2 .. n_signal + 1`` are read, each exactly 50
    finite whitespace-separated numbers. The background lines after them are not read.

    Raises:
        MiniBooNEError: for a missing, empty or non-text file, a bad header, a line that is not
            50 finite numbers (naming the line number and the token), or a file that ends before
            the signal events the header announces.
    """
    file = Path(path)
    if not file.is_file():
        raise MiniBooNEError(f"MINIBOONE file {file} does not exist")
    try:
        with file.open(encoding="utf-8") as stream:
            header = stream.readline()
            if not header.strip():
                what = "is empty" if not header else "starts with a blank line"
                raise MiniBooNEError(
                    f"MINIBOONE file {file} {what}; expected line 1 to hold the event counts "
                    "'n_signal n_background'"
                )
            n_signal = _parse_header(header, file)
            rows = np.empty((n_signal, N_RAW_FEATURES))
            for i in range(n_signal):
                line = stream.readline()
                if not line:
                    raise MiniBooNEError(
                        f"MINIBOONE file {file}: line 1 announces {n_signal} signal events but "
                        f"the file ends after {i} of them (at line {i + 2}); is it truncated?"
                    )
                rows[i] = _parse_row(line, i + 2, file)
    except UnicodeDecodeError as err:
        raise MiniBooNEError(f"MINIBOONE file {file} is not a text file ({err.reason})") from None
    except OSError as err:
        raise MiniBooNEError(f"cannot read MINIBOONE file {file}: {err.strerror}") from None
    return rows


def _parse_header(line: str, file: Path) -> int:
    tokens = line.split()
    counts = [int(t) for t in tokens if re.fullmatch("[0-9]+", t)]
    if len(tokens) != 2 or len(counts) != 2:
        raise MiniBooNEError(
            f"MINIBOONE file {file}, line 1: expected the event counts 'n_signal n_background' "
            f"(two non-negative integers), got {_shorten(line)!r}"
            + (" (a data row: is the header missing?)" if len(tokens) == N_RAW_FEATURES else "")
        )
    if counts[0] == 0:
        raise MiniBooNEError(f"MINIBOONE file {file}, line 1: the file announces 0 signal events")
    return counts[0]


def _parse_row(line: str, lineno: int, file: Path) -> np.ndarray:
    tokens = line.split()
    if len(tokens) != N_RAW_FEATURES:
        raise MiniBooNEError(
            f"MINIBOONE file {file}, line {lineno}: expected {N_RAW_FEATURES} numbers, "
            f"got {len(tokens)}"
        )
    try:
        row = np.array([float(t) for t in tokens])
    except ValueError:
        col = next(j for j, t in enumerate(tokens) if not _is_float(t))
        raise MiniBooNEError(
            f"MINIBOONE file {file}, line {lineno}: cannot parse {_shorten(tokens[col])!r} "
            f"(value {col + 1}) as a number"
        ) from None
    if not np.isfinite(row).all():
        col = int(np.argmax(~np.isfinite(row)))
        raise MiniBooNEError(
            f"MINIBOONE file {file}, line {lineno}: value {col + 1} is {tokens[col]!r}; "
            "expected finite numbers"
        )
    return row


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _shorten(text: str, n: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + "..."


def preprocess_uci(raw: np.ndarray, source: str = "the UCI data") -> np.ndarray:
    """MAF's preprocessing of the raw signal events: ``(N_raw, 50) -> (N, 43)``.

    Drops the rows whose first feature is below -100 (the -999 marker), then every feature whose
    minimum occurs more than 5 times among the remaining rows.

    Raises:
        MiniBooNEError: when no row survives, or the feature rule does not leave 43 features.
    """
    if raw.ndim != 2 or raw.shape[1] != N_RAW_FEATURES:
        raise ValueError(f"raw must be (N, {N_RAW_FEATURES}), got {tuple(raw.shape)}")
    x = raw[raw[:, 0] >= OUTLIER_BELOW]
    if x.shape[0] == 0:
        raise MiniBooNEError(
            f"{source}: all {raw.shape[0]} signal rows are outliers (first value < -100)"
        )
    min_count = (x == x.min(axis=0)).sum(axis=0)  # (50,) how often each feature's minimum occurs
    keep = min_count <= MAX_MIN_COUNT
    if keep.sum() != N_FEATURES:
        dropped = np.flatnonzero(~keep).tolist()
        raise MiniBooNEError(
            f"{source}: MAF's rule (drop a feature whose minimum occurs more than "
            f"{MAX_MIN_COUNT} times) keeps {int(keep.sum())} of {N_RAW_FEATURES} features, "
            f"expected {N_FEATURES} (dropped 0-based features: {dropped}); "
            "is this the UCI MiniBooNE_PID.txt?"
        )
    return np.ascontiguousarray(x[:, keep])


def split_sizes(n: int) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` of MAF's split of ``n`` rows (test last, validation before)."""
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    return n - n_test - n_val, n_val, n_test


def miniboone_splits(
    data: np.ndarray | Tensor, stats: str = "train+val"
) -> tuple[dict[str, Split], Standardize]:
    """MAF's split and normalisation of preprocessed MINIBOONE rows.

    The split is deterministic (row order, see :func:`split_sizes`); each split is z-scored,
    ``z = (x - mean) / std`` with ``std`` the population standard deviation (``ddof=0``),
    computed in float64 and cast to float32.

    Args:
        data: ``(N, 43)`` preprocessed rows (:func:`load_miniboone`), ``N >= 11``.
        stats: rows the statistics come from: ``"train+val"`` (MAF; the default) or ``"train"``.
            The test rows never enter them.

    Returns:
        ``{"train", "val", "test"}`` float32 :class:`Split` s, and the float64
        :class:`~molfff.fff.standardize.Standardize` applied.

    Raises:
        ValueError: for a wrong shape, non-finite values or an unknown ``stats``.
        MiniBooNEError: when a feature is constant over the statistics rows.
    """
    x = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
    x = x.to(torch.float64)
    if x.dim() != 2 or x.shape[1] != N_FEATURES or x.shape[0] < MIN_ROWS:
        raise ValueError(
            f"data must be (N, {N_FEATURES}) with N >= {MIN_ROWS}, got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("data contains NaN or infinite values")
    if stats not in ("train+val", "train"):
        raise ValueError(f"stats must be 'train+val' or 'train', got {stats!r}")
    n_train, n_val, n_test = split_sizes(x.shape[0])
    parts = dict(zip(("train", "val", "test"), x.split([n_train, n_val, n_test]), strict=True))
    ref = x[: n_train + n_val] if stats == "train+val" else parts["train"]
    std = ref.std(dim=0, correction=0)
    if (std == 0).any():
        raise MiniBooNEError(
            f"MINIBOONE feature {int(torch.nonzero(std == 0)[0])} is constant over the "
            f"{stats} rows; it cannot be normalised"
        )
    norm = Standardize.from_data(ref, correction=0)
    splits = {name: Split(norm(part).float()) for name, part in parts.items()}
    return splits, norm


def miniboone_task(
    path: str | Path | None, n_train: int, n_val: int, n_test: int, seed: int
) -> DenseData:
    """MINIBOONE in MAF's normalised units, each split capped at its ``n_*``.

    The statistics come from the whole standard split, so capping does not change the units;
    a capped split is a seeded random subset (``seed``), an uncapped one keeps its row order.
    Published test NLLs are on the whole test split (3,648 rows): leave ``n_test`` at least that.

    Raises:
        MiniBooNEError: (a ``UserError``) when ``path`` is missing or the file is bad.
    """
    if path is None:
        raise MiniBooNEError(
            "config key data.root: set it to MINIBOONE data (MAF's miniboone/data.npy or the "
            "UCI MiniBooNE_PID.txt)"
        )
    for key, cap in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if cap <= 0:
            raise MiniBooNEError(f"config key data.{key} must be positive, got {cap}")
    splits, _ = miniboone_splits(load_miniboone(path))
    g = torch.Generator().manual_seed(seed)
    for name, cap in (("train", n_train), ("val", n_val), ("test", n_test)):
        x = splits[name].x
        if cap < len(x):
            splits[name] = Split(x[torch.randperm(len(x), generator=g)[:cap]])
    return DenseData("miniboone", splits)
