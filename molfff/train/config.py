"""Run configuration: OmegaConf structured configs from YAML, with ``key=value`` overrides.

``load_config("toy2d", ["loss.beta=20"])`` reads ``configs/toy2d.yaml`` (and the files its
``extends:`` chain names), applies the ``fast:`` preset if asked and the overrides
(``OmegaConf.from_dotlist``), and merges all of it into the schema (``OmegaConf.structured``), which
refuses unknown keys and wrong types; :class:`molfff.errors.UserError` names the key. The ``data``
section's schema is the task's own (:attr:`molfff.train.task.Task.data_config`, chosen by
``data.name``): ``data.density`` exists for toy2d only, ``data.budget`` for sbi, and so on. The
result is a plain :class:`Config` dataclass (``OmegaConf.to_object``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from molfff.errors import UserError
from molfff.train.config_checks import validate

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DataConfig:
    """What to train on: the keys every task has. ``name`` selects the task (see
    :mod:`molfff.train.tasks`), whose own schema (a subclass) adds its keys.

    ``n_train``/``n_val``/``n_test`` cap the number of samples drawn or used per split; ``root``
    is where a task's data files are, for tasks that read files (boltzmann, miniboone).
    ``unconstrain``: model ``T(x)``, the data's bounded support mapped to the reals
    (:class:`molfff.fff.support.Unconstrain`), for tasks that know their support (sbi).
    """

    name: str = "toy2d"
    n_train: int = 20000
    n_val: int = 5000
    n_test: int = 20000
    batch_size: int = 256
    standardize: bool = True
    unconstrain: bool = False
    num_workers: int = 0
    root: str | None = None


@dataclass
class ModelConfig:
    """Encoder and decoder architecture (both the same).

    ``resnet``: ``preset`` (S, L) or ``width``/``blocks``/``pre_layers``/``activation``.
    ``mlp_resnet``: the FFF authors' SBI network (an MLP of ``pre_layers`` hidden layers, then
    ``blocks`` residual blocks on ``[x, c]``; :class:`molfff.nn.MLPResNet`).
    ``egnn``: ``width`` hidden units, ``blocks`` equivariant blocks; molecules also use
    ``dequantizer_blocks`` and ``charge_scale`` (dequantized charge = (c + s) / charge_scale),
    and ``egnn_normalization_factor``, the divisor Z of the EGNN's neighbour sums (100 in the
    authors' E-FFF code, which takes EDM's ``EGNN_dynamics_QM9`` default), and
    ``type_offset``, where the dequantizer q starts its type means (``type_offset * one_hot``;
    0: the argmax flow's usual N(0, I) start), and ``egnn_node_index``: 0 (the default) keeps
    the EGNNs permutation-equivariant; I > 0 gives atom k of every molecule the one-hot
    attribute e_k (a diagnostic for one fixed molecule, whose labellings the density then tells
    apart; molecules may have at most I atoms; :class:`molfff.nn.EGNNFlowNet`).

    ``ema_decay``: keep an exponential moving average of the weights, updated after every
    optimizer step (EDM and GeoLDM use 0.999-0.9999); validation, the "best" checkpoint, the
    evaluation after training, ``molfff sample`` and ``molfff evaluate`` all use the averaged
    weights. null or 0: off.
    """

    network: str = "resnet"
    preset: str | None = None
    width: int = 64
    blocks: int = 4
    pre_layers: int = 1
    activation: str = "silu"
    # resnet: global skip y = x + W_out h with W_out zero at initialisation (the map starts as the
    # identity); false: y = W_out h with PyTorch's default initialisation (authors' SBI code)
    skip: bool = True
    # resnet with conditioning: a learned location and scale of c around the encoder's input and
    # the decoder's output (molfff.nn.loc_scale), so narrow posteriors need no extreme weights
    loc_scale: bool = False
    loc_scale_width: int = 64
    dequantizer_blocks: int = 2
    charge_scale: float = 10.0
    type_offset: float = 0.0
    egnn_normalization_factor: float = 100.0
    egnn_node_index: int = 0
    ema_decay: float | None = None


@dataclass
class LossConfig:
    """Surrogate loss settings; beta weights the per-sample *sum* of squared errors."""

    beta: float = 10.0
    hutchinson_samples: int = 1
    # K = 1 vector uniform on the sphere of radius sqrt(m) (vislearn/FFF's SBI code) instead of
    # standard normal: same expectation, lower variance in few dimensions
    hutchinson_sphere: bool = False
    noise_std: float = 0.0
    decoder_jvp: str = "reverse"
    # "data": ||x - g(f(x))||^2 in the (standardised) data's units. "loc_scale": divided by the
    # decoder's learned width exp(s_g(c)) (model.loc_scale), so beta weighs the error relative to
    # a conditional's width, not the prior's, all through training. Measured worse on sir and
    # bernoulli_glm_raw (README, "Reconstruction relative to the learned width")
    reconstruction_frame: str = "data"


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
    # Optimizer steps at most (null: no cap); training stops at whichever of max_epochs and
    # max_steps comes first, and the one-cycle schedule spans that many steps. A step count
    # means the same training length at every data size, where epochs do not.
    max_steps: int | None = None
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
    # Validation and test log two NLLs: "exact", the density of the model that samples (the
    # decoder's preimage of x found by Newton steps, molfff.fff.inverse), and "estimate", the
    # paper's eq. 135 at z = f(x) (one Jacobian; blind to how far g(f(x)) is from x).
    # select_on names the one whose lowest validation value is kept as best.ckpt; "last": no
    # selection, best.ckpt holds the weights at the end of training (validation logs the
    # estimate only).
    select_on: str = "exact"
    # Newton steps at most for the exact NLL (tolerance: molfff.fff.inverse.default_tol), and
    # fresh starts from p_Z for samples that stall from f(x) (behind a fold of the decoder)
    newton_max_iter: int = 20
    newton_restarts: int = 0
    # validate every N training steps (int) or fraction of an epoch (float); null: once per epoch
    val_check_interval: int | float | None = None
    # wall-clock budget "DD:HH:MM:SS"; training stops cleanly (checkpoints written) when it is spent
    max_time: str | None = None
    # micro-batches per optimizer step: the gradient of a batch of accumulate_grad_batches x
    # data.batch_size samples (Lightning scales each micro-batch's loss), at the peak memory
    # of one micro-batch (scripts/memory_qm9_step.py measures it)
    accumulate_grad_batches: int = 1


@dataclass
class EvaluationConfig:
    """After training: molecules to sample and score, and whether to compute novelty.

    During training (molecules): every ``curve_every_n_steps`` optimizer steps (0: never),
    ``curve_samples`` molecules of the training weights and, with ``model.ema_decay``, of the
    EMA are scored into ``sample_curve.jsonl`` / ``sample_curve.png``
    (:mod:`molfff.train.sample_curve`).
    """

    samples: int = 1000
    novelty: bool = True
    curve_every_n_steps: int = 0
    curve_samples: int = 1000


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


# keys of the flat `data` section before per-task schemas, dropped from saved configs where
# they do not apply (every old config held all of them)
LEGACY_DATA_KEYS = ("density", "system", "task", "budget", "c2st_observations")


def data_schema(name: str) -> type[DataConfig]:
    """The ``data`` schema of the task ``name`` (a UserError listing the tasks if unknown)."""
    from molfff.train.tasks import task_class

    return task_class(name).data_config


def _describe(hint: Any) -> str:
    """A type annotation in words, for error messages."""
    words = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        text = " or ".join(_describe(a) for a in args if a is not type(None))
        return text + (" or null" if type(None) in args else "")
    if typing.get_origin(hint) is list or hint is list:
        return "a list"
    if hint is dict or typing.get_origin(hint) is dict:
        return "a mapping"
    return words.get(hint, str(hint))


def _user_error(err: OmegaConfBaseException, given: Any, data_name: str) -> UserError:
    """One line naming the key: valid keys for an unknown one, the expected type for a bad value."""
    key = str(err.full_key or "")
    obj = err.object_type
    is_schema = dataclasses.is_dataclass(obj)
    fields = sorted(f.name for f in dataclasses.fields(obj)) if is_schema else []
    if isinstance(err, ConfigKeyError):
        section = key.rpartition(".")[0]
        if section == "data":
            where = f"for data.name={data_name}"
        else:
            where = f"in section {section}" if section else "at top level"
        return UserError(f"unknown config key {key} {where}; valid keys: {', '.join(fields)}")
    if isinstance(err, ValidationError) and is_schema and key:
        name = key.rpartition(".")[2]
        hint = typing.get_type_hints(obj).get(name)
        value = OmegaConf.select(given, key, default=None)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        return UserError(f"config key {key}: expected {_describe(hint)}, got {value!r}")
    return UserError(f"config key {key or '<top>'}: {str(err.msg or err).splitlines()[0]}")


def _check_sections(layer: dict, where: str) -> None:
    """A section given a value (``loss=3``) gets its own message, before merging."""
    for name, hint in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(hint) and name in layer and not isinstance(layer[name], dict):
            raise UserError(
                f"config section {name} must be a mapping, got {layer[name]!r} ({where})"
            )


def _override_layer(item: str) -> dict:
    """One ``a.b.c=value`` override as a nested dict; the value is parsed as YAML."""
    if "=" not in item or item.startswith("="):
        raise UserError(f"override {item!r} must look like key=value (e.g. loss.beta=20)")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([item]))
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise UserError(f"override {item!r}: value is not valid YAML ({reason})") from None
    except OmegaConfBaseException as err:
        raise UserError(f"override {item!r}: {str(err.msg or err).splitlines()[0]}") from None


def _preset_layer(preset: dict) -> dict:
    """The ``fast`` preset (dotted keys mapped to values) as a nested dict."""
    layer = OmegaConf.create({})
    for key, value in preset.items():
        OmegaConf.update(layer, str(key), value, merge=True, force_add=True)
    return OmegaConf.to_container(layer)


def build_config(data: dict, overrides: list[str] = (), fast: bool = False) -> Config:
    """Merge the ``fast`` preset (if asked), then the overrides, into ``data`` and validate.

    Raises:
        UserError: an unknown key (with the valid ones), a wrong type (key, expected type,
            value), a bad value, or a malformed override.
    """
    if not isinstance(data, dict):
        raise UserError(f"a config must be a mapping of sections, got {data!r}")
    layers = [(data, "config")]
    if fast:
        preset = data.get("fast") or {}
        if not preset:
            raise UserError("this config has no `fast` preset")
        if not isinstance(preset, dict):
            raise UserError(f"config key fast: expected a mapping, got {preset!r}")
        layers.append((_preset_layer(preset), "fast preset"))
    layers += [(_override_layer(item), f"override {item}") for item in overrides]
    for layer, where in layers:
        _check_sections(layer, where)
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(layer) for layer, _ in layers))
    except OmegaConfBaseException as err:
        raise UserError(f"config: {str(err.msg or err).splitlines()[0]}") from None
    name = OmegaConf.select(merged, "data.name", default=DataConfig.name)
    if not isinstance(name, str):
        raise UserError(f"config key data.name: expected a string, got {name!r}")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Config(data=data_schema(name)())), merged)
        config = OmegaConf.to_object(typed)
    except OmegaConfBaseException as err:
        raise _user_error(err, merged, name) from None
    validate(config)
    return config


def config_from_dict(data: dict) -> Config:
    """A :class:`Config` from the plain dict :meth:`Config.to_dict` gives (e.g. a checkpoint's)."""
    return build_config(data)


def legacy_config(data: dict) -> dict:
    """A config dict saved before per-task ``data`` schemas, without the data keys that do not
    apply to its task (old configs held every task's keys). Today's configs pass unchanged."""
    section = data.get("data")
    if not isinstance(section, dict) or not isinstance(section.get("name", "toy2d"), str):
        return data
    try:
        fields = {f.name for f in dataclasses.fields(data_schema(section.get("name", "toy2d")))}
    except UserError:  # an unknown task: reported when the config is built
        return data
    kept = {k: v for k, v in section.items() if k in fields or k not in LEGACY_DATA_KEYS}
    return {**data, "data": kept}


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
    """A YAML mapping from ``path`` (empty file: ``{}``); one UserError for anything else."""
    try:
        data = yaml.safe_load(Path(path).read_text())
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
    base = read_config_file(base_path, (*seen, path.resolve()))
    try:
        return OmegaConf.to_container(OmegaConf.merge(base, data))
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: cannot merge into {base_path} ({err.msg})") from None


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
