"""Shared settings for tests that train: small, quiet, no W&B."""

QUIET = ["logger.wandb=disabled", "trainer.progress_bar=false", "trainer.accelerator=cpu"]


def small(root, epochs: int = 2, n_train: int = 2000) -> list[str]:
    """Overrides for a quick toy2d run writing under ``root``."""
    return QUIET + [
        f"run.root={root}",
        f"trainer.max_epochs={epochs}",
        f"data.n_train={n_train}",
        "data.n_val=500",
        "data.n_test=1000",
        "model.width=32",
        "model.blocks=2",
    ]
