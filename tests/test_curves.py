"""Training curves read back from Lightning's CSV logs of a run folder."""

from pathlib import Path

from molfff.train.curves import plot_curves, read_curves


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_versions_of_a_resumed_run_are_merged_by_step(tmp_path):
    _write(
        tmp_path / "logs/version_0/metrics.csv",
        "epoch,step,train/loss,val/nll\n0,9,5.0,\n0,19,4.0,\n0,19,,3.5\n",
    )
    # the restart re-logs step 19 and continues; version_10 sorts after version_2 numerically
    _write(tmp_path / "logs/version_2/metrics.csv", "epoch,step,train/loss\n0,19,4.5\n0,29,3.0\n")
    _write(
        tmp_path / "logs/version_10/metrics.csv", "epoch,step,train/loss,val/nll\n1,39,2.0,nan\n"
    )
    curves = read_curves(tmp_path)
    assert curves["train/loss"] == [(9, 5.0), (19, 4.5), (29, 3.0), (39, 2.0)]
    assert curves["val/nll"] == [(19, 3.5)]  # the NaN is dropped


def test_plot_writes_a_png_or_nothing(tmp_path):
    assert plot_curves(tmp_path) is None  # no logs yet: no figure
    _write(tmp_path / "logs/version_0/metrics.csv", "epoch,step,train/loss,val/nll\n0,1,2.0,1.5\n")
    out = plot_curves(tmp_path)
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
