"""Typed training configuration: YAML files in configs/ loaded into dataclasses, `key=value` overrides.

Every hyperparameter of method.md has a named field with the paper's value in `configs/paper.yaml`;
the dataclass defaults equal the paper's values too, so a field missing from a YAML file means
"paper". Reproduction switches for the official code's quirks (method.md Sec. 15-16) default to the
geometrically correct behaviour.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class ModelConfig:
    head_model: str = "open_head"      # "open_head" or a path to a FLAME .pkl/.npz
    uv_obj: str | None = None          # OBJ with FLAME's UV layout when the model file has none
    flame_masks: str | None = None     # FLAME_masks.pkl: region vertex sets (local decoder, eval regions)
    local_branch: bool = True          # the local decoder on eye_region/nose/lips/forehead (method.md Sec. 5.6)
    n_shape: int = 300
    n_expr: int = 100
    add_teeth: bool = True
    binding: str = "soft"              # "soft" (STAvatar: UV network offsets) or "hard" (GaussianAvatars)
    uv_size: int = 256                 # UV map resolution of the network (method.md Sec. 5)
    sh_degree: int = 3
    sh_degree_interval: int = 1000     # +1 active SH degree every this many iterations (Sec. 3.4)
    init_opacity: float = 0.1
    disable_static_offset: bool = False


@dataclass
class OptimConfig:
    position_lr_init: float = 0.005    # x scene extent E (Sec. 9)
    position_lr_final: float = 0.00005
    position_lr_max_steps: int = 30_000
    feature_lr: float = 0.0025
    opacity_lr: float = 0.05
    scaling_lr: float = 0.017
    rotation_lr: float = 0.001
    flame_expr_lr: float = 1e-3
    flame_pose_lr: float = 1e-5
    flame_trans_lr: float = 1e-6
    network_lr: float = 1e-4
    adam_eps: float = 1e-15
    scene_extent: float | None = None  # None: camera radius, or the tracked head's for a static camera; 0 official


@dataclass
class LossConfig:
    lambda_dssim: float = 0.2
    lambda_lpips: float = 0.05
    lpips_start_fraction: float = 0.5  # LPIPS only after this fraction of the iterations
    lpips_net: str = "vgg"
    lambda_offset_scale: float = 1e-2
    lambda_offset_color: float = 1e-3
    lambda_scale: float = 1.0
    scale_threshold: float = 0.6


@dataclass
class DensifyConfig:
    densifier: str = "vanilla"         # "vanilla" (3DGS ADC) or "temporal" (STAvatar Temporal ADC)
    densify_from: int = 500            # vanilla ADC schedule (iterations)
    densify_until: int = 15_000
    densify_interval: int = 500
    grad_threshold: float = 2e-4       # NDC units (pixel gradient x (W/2, H/2))
    percent_dense: float = 0.01
    min_opacity: float = 0.01
    max_gaussians: int = 200_000
    # Temporal ADC (method.md Sec. 10)
    cluster_schedule: str = "sequential"  # "sequential" (paper), "interleaved" or "staggered" (ours)
    epochs_per_cluster: int = 5          # N - M; the all-frames phase M is train.epochs - this
    densify_epoch: int = 3               # densify at the first iteration of this epoch of each cluster
    k_min: int = 5
    k_max: int = 12
    pca_components: int = 12            # FTC: PCA size of the expression and pose blocks
    lambda_fpe: float = 0.2
    fpe_formula: str = "code"            # "code" (official; thresholds below are in its units) or "paper"
    clone_error_threshold: float = 1e-3
    clone_max: int = 2500
    burst_k: int = 500
    clone_noise: float = 0.05            # local position std (x exp(sigma)) and SH noise std


@dataclass
class TrainConfig:
    iterations: int | None = None      # None: epochs x number of training frames (Sec. 10.2)
    epochs: int = 6
    seed: int = 58
    background: tuple = (1.0, 1.0, 1.0)
    checkpoint_every: int = 1000
    eval_fractions: tuple = (0.5, 1.0)
    max_nan_steps: int = 10
    device: str = "auto"               # "auto", "cpu" or "cuda"
    image_scale: float = 1.0           # downsample images by this factor (CPU demos)
    max_test_frames: int | None = None  # evaluate at most this many test frames, evenly spaced
    cluster_phase_eval: bool = False   # Temporal ADC: per-cluster training PSNR at each cluster phase's end


@dataclass
class DataConfig:
    # Test split of the dataset readers (stavatar_ti.data); None = the producer's own convention.
    test_frames: int | None = None     # single sequences (INSTA/metrical-tracker, one IMavatar clip): last N frames
    test_subdirs: list | None = None   # IMavatar/PointAvatar subjects: the test clip folder name(s)


@dataclass
class QuirksConfig:
    uv_lookup_flip_v: bool = False     # official: True (mirrored UV lookup, Sec. 4.5)
    uv_align_corners: bool = False     # official: True (grid_sample align_corners)
    lpips_input_range: str = "[-1,1]"  # official: "[0,1]" (kiui feed without rescaling)
    cluster_index_mode: str = "timestep"  # official: "shuffled_index" (cluster lists index a shuffled list)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    quirks: QuirksConfig = field(default_factory=QuirksConfig)


class ConfigError(ValueError):
    """A bad config file or override; the message names the file or key."""


def _coerce(value, current, key: str):
    """Convert a YAML/CLI value to the type of the field's current value."""
    if current is None or value is None:
        return value
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)  # int(2.5) would silently truncate
            return int(value)
        if isinstance(current, float):
            out = float(value)
            if math.isnan(out):
                raise ValueError(value)
            return out
        if isinstance(current, tuple):
            return tuple(yaml.safe_load(value) if isinstance(value, str) else value)
        return type(current)(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: cannot use {value!r} as {type(current).__name__}") from None


def _optional_type(sub, name: str):
    """A stand-in value of the type of an `X | None` field (for coercing into a field that is None)."""
    kind = str(next(f.type for f in dataclasses.fields(sub) if f.name == name))
    for token, example in (("int", 0), ("float", 0.0), ("str", "")):
        if kind.startswith(token + " ") or kind == token:
            return example
    return None


# Fields that were removed because nothing read them; old config.yaml files may still name them.
REMOVED_KEYS = {"densify.final_epochs": "the all-frames phase is train.epochs - densify.epochs_per_cluster"}


def set_value(cfg: Config, key: str, value, source: str) -> None:
    """Set `section.name` to `value` coerced to the field's type; ConfigError names `source`/key.
    Keys of REMOVED_KEYS are ignored with a warning (old run folders stay loadable)."""
    if key in REMOVED_KEYS:
        warnings.warn(f"{source}: {key} is no longer used ({REMOVED_KEYS[key]}); ignored", stacklevel=2)
        return
    section, _, name = key.partition(".")
    sub = getattr(cfg, section, None)
    if sub is None or not dataclasses.is_dataclass(sub) or not name or not hasattr(sub, name):
        raise ConfigError(f"{source}: unknown config key {key!r}")
    current = getattr(sub, name)
    if current is None and value is not None:
        current = _optional_type(sub, name)
    setattr(sub, name, _coerce(value, current, key))


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config (nested sections) and apply `section.key=value` overrides.

    Raises:
        ConfigError: unreadable/malformed YAML, unknown keys, or values of the wrong type.
    """
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section {section!r} must be a mapping")
            for name, value in values.items():
                set_value(cfg, f"{section}.{name}", value, str(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key=value")
        set_value(cfg, key.strip(), yaml.safe_load(value) if value.strip() else value, "override")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks. Raises ConfigError naming the key."""
    choices = {"model.binding": ("soft", "hard"), "densify.densifier": ("vanilla", "temporal"),
               "densify.cluster_schedule": ("sequential", "interleaved", "staggered"),
               "train.device": ("auto", "cpu", "cuda"), "quirks.lpips_input_range": ("[-1,1]", "[0,1]"),
               "loss.lpips_net": ("vgg", "alex"), "densify.fpe_formula": ("code", "paper"),
               "quirks.cluster_index_mode": ("timestep", "shuffled_index")}
    for key, allowed in choices.items():
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) not in allowed:
            raise ConfigError(f"{key}: expected one of {list(allowed)}")
    if not 0 <= cfg.model.sh_degree <= 3:
        raise ConfigError("model.sh_degree: expected 0..3")
    if cfg.model.uv_size < 16:
        raise ConfigError("model.uv_size: expected >= 16")
    if cfg.train.image_scale <= 0 or cfg.train.image_scale > 1:
        raise ConfigError("train.image_scale: expected (0, 1]")
    if cfg.train.cluster_phase_eval and cfg.densify.densifier != "temporal":
        raise ConfigError("train.cluster_phase_eval: needs densify.densifier=temporal (the FTC clusters)")
    _check_values(cfg)
    _check_test_subdirs(cfg)


def _check_test_subdirs(cfg: Config) -> None:
    """data.test_subdirs: None, a clip name or a non-empty list of distinct clip names (normalised to a
    list of str, as PointAvatar's ``str(dir)``); raises ConfigError naming the key."""
    value = cfg.data.test_subdirs
    if value is None:
        return
    items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items or any(
            isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip() for v in items):
        raise ConfigError(f"data.test_subdirs: expected a clip folder name or a list of names, got {value!r}")
    names = [str(v) for v in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.test_subdirs: names repeat in {names!r}")
    cfg.data.test_subdirs = names


# Value ranges checked at load time (issue 17): key -> (low, low inclusive, high, high inclusive);
# None is open. Every key names a Config field (tests/test_config_fields.py).
_RANGES = {
    "model.n_shape": (1, True, None, True), "model.n_expr": (1, True, None, True),
    "model.sh_degree_interval": (1, True, None, True), "model.init_opacity": (0, False, 1, False),
    "optim.position_lr_init": (0, False, None, True), "optim.position_lr_final": (0, False, None, True),
    "optim.position_lr_max_steps": (1, True, None, True), "optim.feature_lr": (0, True, None, True),
    "optim.opacity_lr": (0, True, None, True), "optim.scaling_lr": (0, True, None, True),
    "optim.rotation_lr": (0, True, None, True), "optim.flame_expr_lr": (0, True, None, True),
    "optim.flame_pose_lr": (0, True, None, True), "optim.flame_trans_lr": (0, True, None, True),
    "optim.network_lr": (0, True, None, True), "optim.adam_eps": (0, False, None, True),
    "optim.scene_extent": (0, True, None, True),
    "loss.lambda_dssim": (0, True, 1, True), "loss.lambda_lpips": (0, True, None, True),
    "loss.lpips_start_fraction": (0, True, 1, True), "loss.lambda_offset_scale": (0, True, None, True),
    "loss.lambda_offset_color": (0, True, None, True), "loss.lambda_scale": (0, True, None, True),
    "loss.scale_threshold": (0, False, None, True),
    "densify.densify_from": (0, True, None, True), "densify.densify_until": (0, True, None, True),
    "densify.densify_interval": (1, True, None, True), "densify.grad_threshold": (0, True, None, True),
    "densify.percent_dense": (0, True, None, True), "densify.min_opacity": (0, True, 1, False),
    "densify.max_gaussians": (1, True, None, True), "densify.epochs_per_cluster": (1, True, None, True),
    "densify.densify_epoch": (1, True, None, True),
    "densify.k_min": (2, True, None, True), "densify.k_max": (2, True, None, True),
    "densify.pca_components": (1, True, None, True), "densify.lambda_fpe": (0, True, None, True),
    "densify.clone_error_threshold": (0, True, None, True), "densify.clone_max": (0, True, None, True),
    "densify.burst_k": (0, True, None, True), "densify.clone_noise": (0, True, None, True),
    "train.iterations": (1, True, None, True), "train.epochs": (1, True, None, True),
    "train.checkpoint_every": (1, True, None, True), "train.max_nan_steps": (1, True, None, True),
    "train.max_test_frames": (1, True, None, True),
    "data.test_frames": (0, True, None, True),
}


def _describe(lo, lo_in, hi, hi_in) -> str:
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"{'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _check_values(cfg: Config) -> None:
    """Finiteness of every number and the ranges of `_RANGES`; raises ConfigError naming the key."""
    for sec in dataclasses.fields(cfg):
        sub = getattr(cfg, sec.name)
        for f in dataclasses.fields(sub):
            key, value = f"{sec.name}.{f.name}", getattr(sub, f.name)
            items = value if isinstance(value, tuple) else (value,)
            for v in items:
                if isinstance(v, bool) or v is None:
                    continue
                if isinstance(v, (int, float)) and not math.isfinite(v):
                    raise ConfigError(f"{key}: expected a finite number, got {v!r}")
            rng = _RANGES.get(key)
            if rng is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            lo, lo_in, hi, hi_in = rng
            ok = (value >= lo if lo_in else value > lo) and (hi is None or (value <= hi if hi_in else value < hi))
            if not ok:
                raise ConfigError(f"{key}: expected {_describe(*rng)}, got {value!r}")
    t = cfg.train
    for name in ("eval_fractions", "background"):
        values = getattr(t, name)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"train.{name}: expected numbers, got {list(values)!r}")
        lo_in = name == "background"
        if not all((v >= 0 if lo_in else v > 0) and v <= 1 for v in values):
            raise ConfigError(f"train.{name}: expected values in {'[0, 1]' if lo_in else '(0, 1]'}, got {list(values)!r}")
    if len(t.background) != 3:
        raise ConfigError(f"train.background: expected 3 values (RGB), got {list(t.background)!r}")
    d = cfg.densify
    if d.k_max < d.k_min:
        raise ConfigError(f"densify.k_max: expected >= densify.k_min ({d.k_min}), got {d.k_max}")


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists) for writing the resolved config.yaml."""
    def plain(x):
        if isinstance(x, tuple):
            return list(x)
        return x
    return {s.name: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s.name)).items()}
            for s in dataclasses.fields(cfg)}


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
