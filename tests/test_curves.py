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


def test_sample_curve_of_a_resumed_run_keeps_the_last_point_of_each_step(tmp_path):
    import json

    from molfff.train.sample_curve import plot_sample_curve, read_sample_curve

    path = tmp_path / "sample_curve.jsonl"
    assert read_sample_curve(path) == [] and plot_sample_curve(path) is None
    rows = [
        {"step": 600, "minutes": 10.0, "samples": 5, "raw": {"atom_stability": 0.2}},
        {"step": 1200, "minutes": 20.0, "samples": 5, "raw": {"atom_stability": 0.3}},
        # a resumed run repeats step 1200 (after its last checkpoint) and goes on
        {"step": 1200, "minutes": 21.0, "samples": 5, "raw": {"atom_stability": 0.35}},
        {"step": 1800, "minutes": 31.0, "samples": 5, "raw": {"atom_stability": 0.4}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_sample_curve(path)
    assert [r["step"] for r in got] == [600, 1200, 1800]
    assert got[1]["raw"]["atom_stability"] == 0.35
    png = plot_sample_curve(path, "qm9: ")
    assert png == tmp_path / "sample_curve.png" and png.stat().st_size > 0


def test_sample_curve_points_are_optimizer_steps_with_micro_batches(tmp_path):
    """With accumulate_grad_batches=2 two batches end at each global step, the first two
    before any optimizer step: one point per step, none at step 0."""
    from types import SimpleNamespace

    import torch

    from molfff.train.sample_curve import SampleCurve, read_sample_curve

    path = tmp_path / "sample_curve.jsonl"
    curve = SampleCurve(lambda module: {"atom_stability": 0.5}, 1, path, samples=3)
    module = torch.nn.Linear(1, 1)
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, callbacks=[], loggers=[])
    curve.on_train_start(trainer, module)
    for batch_idx, step in enumerate([0, 0, 1, 1, 2, 2]):  # global_step at each batch end
        trainer.global_step = step
        curve.on_train_batch_end(trainer, module, None, None, batch_idx)
    assert [r["step"] for r in read_sample_curve(path)] == [1, 2]
