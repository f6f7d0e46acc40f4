"""scripts/memory_qm9_step.py: bad arguments end with a message, not a child's traceback."""

import pytest

from tests.helpers import load_script

memory = load_script("memory_qm9_step")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeats", "-1"], "--repeats must be non-negative"),
        (["--batch", "0"], "must be at least 1"),
        (["--blocks", "0"], "must be at least 1"),
        (["--width", "0"], "must be at least 1"),
        (["--micro-batches", "0"], "--micro-batches must be between 1 and --batch (4)"),
        (["--micro-batches", "5"], "--micro-batches must be between 1 and --batch (4)"),
    ],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        memory.main(["--batch", "4", "--blocks", "1", *argv])
    assert err.value.code == 2 and message in capsys.readouterr().err
