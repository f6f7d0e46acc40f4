"""Run configuration: typed dataclasses, loaded from YAML, with dotted command-line overrides.

``load_config("toy2d", ["loss.beta=20"])`` reads ``configs/toy2d.yaml``, applies the overrides and
checks every key and type, raising :class:`molfff.errors.UserError` with the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from molfff.errors import UserError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DataConfig:
    """What to train on. ``name`` selects the application; the rest are its settings.

    ``toy2d`` uses ``density``; ``boltzmann`` uses ``system`` (DW4, LJ13, LJ55) and ``root`` (a
    folder of ``{split}_split_{system}.npy`` files; default: the reference data, then data/).
    ``sbi`` uses ``task`` (an sbibm task), ``budget`` (simulations for training + validation)
    and ``c2st_observations`` (how many of the 10 observations to score by C2ST after training).
    ``n_train``/``n_val``/``n_test`` cap the number of samples drawn or used per split.
    """

    name: str = "toy2d"
    density: str = "ring"
    system: str = "DW4"
    root: str | None = None
    task: str = "two_moons"
    budget: int = 10000
    c2st_observations: int = 10
    n_train: int = 20000
    n_val: int = 5000
    n_test: int = 20000
    batch_size: int = 256
    standardize: bool = True
    num_workers: int = 0


@dataclass
class ModelConfig:
    """Encoder and decoder architecture (both the same).

    ``resnet``: ``preset`` (S, L) or ``width``/``blocks``/``pre_layers``/``activation``.
    ``egnn``: ``width`` hidden units, ``blocks`` equivariant blocks; molecules also use
    ``dequantizer_blocks`` and ``charge_scale`` (dequantized charge = (c + s) / charge_scale).
    """

    network: str = "resnet"
    preset: str | None = None
    width: int = 64
    blocks: int = 4
    pre_layers: int = 1
    activation: str = "silu"
    dequantizer_blocks: int = 2
    charge_scale: float = 10.0


@dataclass
class LossConfig:
    """Surrogate loss settings; beta weights the per-sample *sum* of squared errors."""

    beta: float = 10.0
    hutchinson_samples: int = 1
    noise_std: float = 0.0
    decoder_jvp: str = "reverse"


@dataclass
class OptimConfig:
    """Adam with an optional schedule: ``onecycle``, ``exponential`` (per epoch) or ``constant``."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    gamma: float = 0.98
    grad_clip: float | None = 1.0


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer``."""

    max_epochs: int = 50
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 20
    progress_bar: bool = True
    eval_batch_size: int = 2048
    limit_val_batches: int | float = 1.0
    jacobian_chunk: int = 32
    # validate every N training steps (int) or fraction of an epoch (float); null: once per epoch
    val_check_interval: int | float | None = None
    # wall-clock budget "DD:HH:MM:SS"; training stops cleanly (checkpoints written) when it is spent
    max_time: str | None = None


@dataclass
class EvaluationConfig:
    """After training: molecules to sample and score, and whether to compute novelty."""

    samples: int = 1000
    novelty: bool = True


@dataclass
class LoggerConfig:
    """Weights & Biases through Lightning: ``offline`` (default), ``online`` or ``disabled``."""

    wandb: str = "offline"
    project: str = "molfff"


@dataclass
class RunConfig:
    """Where run folders go: ``root/name/<timestamp>``; name defaults to the config's name."""

    root: str = "runs"
    name: str | None = None


@dataclass
class BetaSearchConfig:
    """Appendix B.4 of the paper: short runs over beta by factors of ten.

    A beta is *stable* when the validation NLL stays finite and does not rise more than
    ``nll_jump`` nats above its best value, and the per-dimension reconstruction error ends below
    ``recon_tol`` (in the units the flow sees, i.e. standardised). Among stable betas the one with
    the lowest final validation NLL wins.
    """

    betas: list[float] | None = None
    factors: int = 2
    epochs: int = 3
    nll_jump: float = 1.0
    recon_tol: float = 0.01


@dataclass
class Config:
    """A whole run. ``fast`` holds the overrides that ``--fast`` applies (a short budget)."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    beta_search: BetaSearchConfig = field(default_factory=BetaSearchConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    fast: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type or raise a UserError naming ``key``."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except UserError:
                pass
        raise UserError(f"config key {key}: expected {hint}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"config key {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_value(v, item, key) for v in value]
    if hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key}: expected a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"config key {key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {hint} for {key}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "<top>"
        raise UserError(f"config section {where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section {prefix.rstrip('.')}" if prefix else "at top level"
        raise UserError(
            f"unknown config key {prefix}{unknown[0]} {where}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``, creating sections as needed.

    Unknown keys are reported later, by :func:`from_dict`, with the list of valid ones.
    """
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"config key {'.'.join(parts[: i + 1])} is a value, not a section")
    node[parts[-1]] = value


def apply_override(data: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key=value (e.g. loss.beta=20)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise UserError(f"override {item!r}: value is not valid YAML ({err})") from None
    set_dotted(data, key, value)


def resolve_config_path(name: str) -> Path:
    """A YAML path, or a config name looked up in ./configs and in the repository's configs/."""
    candidates = [Path(name)]
    if not name.endswith((".yaml", ".yml")):
        candidates += [Path("configs") / f"{name}.yaml", REPO_CONFIGS / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    known = (
        sorted(
            p.relative_to(REPO_CONFIGS).with_suffix("").as_posix()
            for p in REPO_CONFIGS.rglob("*.yaml")
        )
        if REPO_CONFIGS.is_dir()
        else []
    )
    raise UserError(f"no config {name!r}: not a file, and not one of: {', '.join(known)}")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a config must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def build_config(data: dict, overrides: list[str] = (), fast: bool = False) -> Config:
    """Merge overrides (after the ``fast`` preset, if asked) into ``data`` and validate."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    if fast:
        preset = data.get("fast") or {}
        if not preset:
            raise UserError("this config has no `fast` preset")
        for key, value in preset.items():
            set_dotted(data, key, value)
    for item in overrides:
        apply_override(data, item)
    config = from_dict(Config, data)
    validate(config)
    return config


CHOICES = {
    "optim.schedule": ("onecycle", "exponential", "constant"),
    "logger.wandb": ("offline", "online", "disabled"),
    "loss.decoder_jvp": ("forward", "reverse"),
}


def validate(config: Config) -> None:
    """Value checks that types cannot express; raises UserError naming the key."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise UserError(f"config key {key}: {value!r} is not one of {', '.join(allowed)}")
    positive = {
        "data.batch_size": config.data.batch_size,
        "data.n_train": config.data.n_train,
        "data.n_val": config.data.n_val,
        "data.n_test": config.data.n_test,
        "optim.lr": config.optim.lr,
        "trainer.max_epochs": config.trainer.max_epochs,
        "loss.hutchinson_samples": config.loss.hutchinson_samples,
        "beta_search.epochs": config.beta_search.epochs,
        "trainer.eval_batch_size": config.trainer.eval_batch_size,
        "data.budget": config.data.budget,
        "trainer.jacobian_chunk": config.trainer.jacobian_chunk,
        "trainer.limit_val_batches": config.trainer.limit_val_batches,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"config key {key} must be positive, got {value}")
    non_negative = {
        "loss.beta": config.loss.beta,
        "loss.noise_std": config.loss.noise_std,
        "optim.weight_decay": config.optim.weight_decay,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise UserError(f"config key {key} must be non-negative, got {value}")
    interval = config.trainer.val_check_interval
    if interval is not None and interval <= 0:
        raise UserError(f"config key trainer.val_check_interval must be positive, got {interval}")
    if config.trainer.max_time is not None and not _is_duration(config.trainer.max_time):
        raise UserError(
            f"config key trainer.max_time: {config.trainer.max_time!r} is not DD:HH:MM:SS"
        )
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise UserError(
            f"config key optim.grad_clip must be positive or null, got {config.optim.grad_clip}"
        )


def _is_duration(value) -> bool:
    """Whether ``value`` is Lightning's ``DD:HH:MM:SS`` duration."""
    parts = str(value).split(":")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, section by section."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config with its ``extends: other`` chain resolved (the file's keys win)."""
    if path.resolve() in seen:
        raise UserError(f"{path}: `extends` loops back to itself")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: `extends` must name a config, got {parent!r}")
    base_path = path.parent / f"{parent}.yaml"
    if not base_path.is_file():
        base_path = resolve_config_path(parent)
    return deep_merge(read_config_file(base_path, (*seen, path.resolve())), data)


def load_config(name: str, overrides: list[str] = (), fast: bool = False) -> Config:
    """Read a config by name or path, apply ``--fast`` and ``key=value`` overrides, validate."""
    path = resolve_config_path(name)
    data = read_config_file(path)
    data.setdefault(
        "name", Path(name).with_suffix("").as_posix() if not Path(name).is_file() else path.stem
    )
    return build_config(data, overrides, fast)


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
