"""Experiment configuration: the typed schema of ``configs/experiments/*.yaml`` and the ONE place where defaults live.

An experiment YAML has five sections, each optional (every field has a default here)::

    name: phantom_quick
    data:  {phantom: {n_cases: 48, size: 64, seed: 0}, spatial_size: 64, batch_size: 4}
    model: {preset: spca_tiny}                       # or {name: spca_vlm, params: {...}}
    loss:  {name: pid_tversky, params: {kp: 0.5}}
    train: {epochs: 4, lr: 1e-3, seed: 0}
    eval:  {split: test, num_beams: 1}

``load_config(path, ["train.lr=3e-4", "loss.params.kp=0.2"])`` applies ``--set`` overrides (values are parsed as
YAML, then type-checked by the schema). Unknown keys and bad values raise :class:`~lss_vlm.errors.ConfigError` naming
the dotted key and what is allowed. ``dump_config`` writes the fully resolved config (every default) to YAML.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lss_vlm.errors import ConfigError, LssError
from lss_vlm.io import atomic_write_text

#: Folder of the shipped YAML configs (``configs/`` at the repository root).
CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
MODEL_PRESET_DIR = CONFIG_ROOT / "models"
#: Where a synthesised phantom is cached when ``data.cache_dir`` is not set (``$LSS_VLM_CACHE`` overrides).
DEFAULT_CACHE_DIR = Path(os.environ.get("LSS_VLM_CACHE", Path.home() / ".cache" / "lss-vlm"))


#: Largest integer accepted for a size-like model argument (embed_dim, channels, ...): beyond it the model cannot fit.
MAX_MODEL_INT = 1 << 16
#: Largest LoRA rank (``*_lora_rank``; the model checks the same bound: ``lss_vlm.models.lora.check_rank``).
MAX_LORA_RANK = 4096


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated, floats must be finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def check_finite_tree(value: Any, key: str) -> None:
    """``ValueError`` naming the dotted key of the first NaN or infinite number in a nested dict/list ``value``."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite_tree(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite_tree(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {value}")
    elif isinstance(value, str) and _spells_non_finite(value):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")


def _spells_non_finite(text: str) -> bool:
    """True for text that Python's ``float`` reads as NaN or ±inf ('nan', 'INFINITY', '1e999'): YAML keeps those as
    strings, and a loss or model would turn them into non-finite numbers later."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def check_model_params(params: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Numbers of ``model.params`` in range, judged by the constructor default's type: finite; a size-like argument
    (a positive integer, or a list of them, by default) a whole number in 1..:data:`MAX_MODEL_INT`; one whose default
    is 0 (a LoRA rank: 0 = off) a whole number in 0..:data:`MAX_LORA_RANK`; one with a float default a number (``>= 0``
    for a ``*_weight``); ``dropout`` in [0, 1). ``ValueError`` names the key and the allowed values."""
    check_finite_tree(params, "model.params")
    for name, value in params.items():
        default, key = defaults.get(name), f"model.params.{name}"
        if _is_count(default) or (isinstance(default, list) and default and all(map(_is_count, default))):
            items = value if isinstance(value, list) else [value]
            if not items or not all(_is_count(v) and v <= MAX_MODEL_INT for v in items):
                raise ValueError(f"{key}: expected whole number(s) from 1 to {MAX_MODEL_INT}, got {value!r}")
        if _is_number(default) and default == 0 and not isinstance(default, float):
            if not (_is_number(value) and isinstance(value, int) and 0 <= value <= MAX_LORA_RANK):
                raise ValueError(f"{key}: expected a whole number from 0 (off) to {MAX_LORA_RANK}, got {value!r}")
        if isinstance(default, float) and not _is_number(value):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        if isinstance(default, float) and name.endswith("_weight") and value < 0:
            raise ValueError(f"{key}: expected a number >= 0, got {value!r}")
        if name == "dropout" and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"{key}: expected a probability in [0, 1), got {value!r}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        if name == "contrastive_temperature" and not (_is_number(value) and 0 < value <= 10):
            raise ValueError(f"{key}: expected a number in (0, 10] (CLIP starts at 0.07), got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class PhantomConfig(_Section):
    """Settings of the embedded phantom, passed to ``lss_vlm.data.phantom.synthesize``."""

    n_cases: int = Field(
        120, ge=6, le=100_000, description="number of synthetic cases (patient-level train/val/test split)"
    )
    size: int = Field(64, ge=32, le=1024, description="slice size in pixels (square)")
    seed: int = Field(0, ge=0, description="phantom seed; the phantom is a pure function of these settings")
    shift: str | None = Field(None, description="named acquisition-shift preset (out-of-distribution suites)")
    options: dict[str, Any] = Field(default_factory=dict, description="extra synthesize() keyword arguments")

    @field_validator("options")
    @classmethod
    def _finite_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        check_finite_tree(options, "data.phantom.options")
        return options


class FieldOfViewConfig(_Section):
    """Field of view (mm, square) that ``spatial_size`` pixels cover per view type, when ``target_spacing`` is null.

    Defaults: sagittal 205 mm (L1 to S1 of an adult with margin), axial 110 mm (vertebral body to spinous process).
    Real sagittal scans are often 300-400 mm wide: a structure outside the field of view is cropped away, with a
    warning that counts the labelled pixels lost.
    """

    sagittal: float = Field(205.0, gt=0, description="sagittal field of view in mm")
    axial: float = Field(110.0, gt=0, description="axial field of view in mm")


class TargetSpacingConfig(_Section):
    """In-plane pixel size (mm) views are resampled to, per view type; null = field of view / spatial_size."""

    sagittal: float | None = Field(None, gt=0, description="sagittal mm per pixel; null = fov_mm.sagittal / size")
    axial: float | None = Field(None, gt=0, description="axial mm per pixel; null = fov_mm.axial / size")


class DataConfig(_Section):
    """Where the cases come from and how they are batched. ``manifest`` wins over ``phantom`` when set.

    Geometry: each view is resampled to ``target_spacing`` mm per pixel (default ``fov_mm / spatial_size``) and then
    centre-cropped or padded to ``spatial_size`` pixels, so ``spatial_size x target_spacing`` is the field of view.
    """

    manifest: Path | None = Field(None, description="manifest.csv of a prepared dataset; null = use the phantom")
    phantom: PhantomConfig = Field(default_factory=PhantomConfig)
    cache_dir: Path | None = Field(None, description=f"phantom cache folder; null = {DEFAULT_CACHE_DIR}")
    spatial_size: int = Field(64, ge=16, le=1024, description="views are resampled to this square size")
    fov_mm: FieldOfViewConfig = Field(default_factory=FieldOfViewConfig)
    target_spacing: TargetSpacingConfig = Field(default_factory=TargetSpacingConfig)
    batch_size: int = Field(4, ge=1, le=4096)
    augment: bool = Field(True, description="random training augmentation (MONAI)")
    augment_profile: Literal["standard", "domain_randomisation"] = Field(
        "standard",
        description="standard = affine + mild intensity jitter; domain_randomisation adds SynthSeg-style elastic "
        "deformation, random intensity remapping, bias field, gamma, blur and noise (Billot et al. 2023)",
    )
    views: list[str] | None = Field(
        None, description="views to read (e.g. [sag_t2]); the others are treated as missing; null = all"
    )
    num_workers: int = Field(0, ge=0, le=256)


class ModelConfig(_Section):
    """Model registry name plus its keyword arguments; ``preset`` pulls both from ``configs/models/<preset>.yaml``."""

    preset: str | None = Field(None, description="name of configs/models/<preset>.yaml, or a YAML path")
    name: str = Field("spca_vlm", description="lss_vlm.models registry name")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of build_model")


class LossConfig(_Section):
    """Segmentation loss under test: ``losses.build_loss(name, **params)`` (checked at load: ``losses.check_loss``)."""

    name: str = Field(
        "dice", description="losses registry name (lss-bench list losses), or 'package.module:factory' (importlib)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the loss")


class EarlyStoppingConfig(_Section):
    """Stop when the validation ``metric`` has not improved for ``patience`` epochs (0 = never stop early)."""

    metric: str = Field("dice_macro", description="validation metric key (without the 'val/' prefix)")
    mode: Literal["max", "min"] = "max"
    patience: int = Field(0, ge=0, le=100_000)


class TrainConfig(_Section):
    """Optimisation: AdamW + schedule, the multi-task weights and reproducibility switches."""

    epochs: int = Field(20, ge=1, le=100_000)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=10)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient L2 norm; null = no clipping")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    lambda_seg: float = Field(1.0, ge=0, le=1000, description="weight of the segmentation loss under test")
    lambda_cls: float = Field(0.5, ge=0, le=1000, description="weight of the grade cross-entropy")
    lambda_txt: float = Field(0.2, ge=0, le=1000, description="weight of the report token cross-entropy")
    lambda_cause: float = Field(
        0.5, ge=0, le=1000, description="weight of the cause BCE (only with model.cause_head: true)"
    )
    lambda_contrastive: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="weight of the image-text InfoNCE between each level's pooled patch tokens and its reference "
        "sentence (0 = off; > 0 builds the model with contrastive_head=true)",
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="exponential moving average of the weights after every step, d in (0, 1), e.g. 0.999 "
        "(SWAD-style weight averaging for transfer); validation, the best checkpoint and model.safetensors use "
        "the average; null = off",
    )
    seed: int = Field(0, ge=0)
    init_weights: Path | None = Field(
        None,
        description="model.safetensors to start from (fine-tuning, e.g. a phantom-trained run's); null = random init",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(
        True, description="mixed precision (bfloat16, float16 on GPUs without it); only ever used on CUDA"
    )
    compile: bool = Field(False, description="torch.compile the training forward; only used on CUDA (no-op on CPU)")
    deterministic: bool = True
    quiet: bool = Field(False, description="no progress bars")


class EvalConfig(_Section):
    """Final evaluation of the best checkpoint."""

    split: Literal["train", "val", "test"] = "test"
    checkpoint: Literal["best", "last"] = "best"
    num_beams: int = Field(1, ge=1, le=64)
    max_report_tokens: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="cap on generated report tokens; null = the model's limit (1.25 x longest reference)",
    )
    text_metrics: bool = Field(True, description="BLEU/METEOR/ROUGE-L/CIDEr (needs Java); off = skipped")
    measure_on: Literal["native", "model"] = Field(
        "native",
        description="grid of the reports' measurements (area, AP diameter): native = each axial view's acquired "
        "pixels (class probabilities resampled back), model = the model's grid",
    )
    refine_sac: bool = Field(
        True,
        description="re-decide the predicted thecal sac's boundary pixels from the acquired intensities before "
        "measuring (a pixel classifier fitted on the training split; measure_on: native only)",
    )
    overlay_prompt: str | None = Field(
        None, description="prompt of the attention map in overlay.jpg; null = label/thecal_sac"
    )


class ExperimentConfig(_Section):
    """One experiment: data, model, loss, training and evaluation."""

    name: str = "experiment"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    # validate_default: a YAML without a loss section gets the loss's registered defaults filled in exactly like one
    # that names the loss, so the fresh config and the config.yaml saved from it resolve (and hash) the same on resume
    loss: LossConfig = Field(default_factory=LossConfig, validate_default=True)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("loss")
    @classmethod
    def _loss_builds(cls, loss: LossConfig) -> LossConfig:
        """Fill in the loss's registered defaults, then check it (``losses.check_loss``: built, or for a MONAI-backed
        loss in a process without MONAI, its signature and value checks) so bad params fail at load time."""
        import losses
        from losses.errors import LossConfigError

        try:
            params = {**losses.loss_spec(loss.name)["defaults"], **loss.params}
        except LossConfigError as exc:  # unknown name, a broken plugin, an unimportable "package.module:factory"
            raise ValueError(f"loss.name: {exc}") from None
        check_finite_tree(loss.params, "loss.params")
        try:
            losses.check_loss(loss.name, params)
        except (TypeError, ValueError, LssError) as exc:
            raise ValueError(f"loss.params: {exc}") from None
        return LossConfig(name=loss.name, params=params)

    @model_validator(mode="after")
    def _model_matches_data(self) -> ExperimentConfig:
        """Known model; its constructor defaults filled in; ``image_size`` defaults to (must equal) the data size."""
        from lss_vlm.models import available_models

        names = available_models()
        if self.model.name not in names:
            hint = did_you_mean(self.model.name, names)
            raise ValueError(f"model.name: unknown model {self.model.name!r}; choose one of: {', '.join(names)}{hint}")
        params = {"image_size": self.data.spatial_size, **self.model.params}
        accepted = _constructor_defaults(self.model.name)
        unknown = sorted(set(params) - set(accepted)) if accepted is not None else []
        if unknown:
            raise ValueError(
                f"model.params: unknown argument(s) {', '.join(unknown)} for model {self.model.name!r}; "
                f"valid: {', '.join(sorted(accepted or {}))}"
            )
        if params["image_size"] != self.data.spatial_size:
            raise ValueError(
                f"model.params.image_size ({params['image_size']}) must equal data.spatial_size "
                f"({self.data.spatial_size})"
            )
        check_model_params(params, accepted or {})
        if self.train.lambda_contrastive > 0:
            if accepted is not None and "contrastive_head" not in accepted:
                raise ValueError(
                    f"train.lambda_contrastive: model {self.model.name!r} has no contrastive head; "
                    "use spca_vlm or set train.lambda_contrastive=0"
                )
            params["contrastive_head"] = True
        self.model.params = {**(accepted or {}), **params}
        return self


def _constructor_defaults(model_name: str) -> dict[str, Any] | None:
    """Keyword defaults of a registered model's factory (None if it takes ``**kwargs``), JSON-friendly."""
    import inspect

    from lss_vlm.models import MODELS, available_models

    available_models()  # imports (registers) every model factory
    params = inspect.signature(MODELS.get(model_name)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in params
        if p.default is not inspect.Parameter.empty
    }


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# ----------------------------------------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (``None`` = all defaults), apply ``key=value`` overrides and validate.

    Raises :class:`ConfigError` naming the file and the dotted key for unknown keys, bad values and bad overrides.
    """
    source = str(path) if path is not None else "defaults"
    raw: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides or []:
        _apply_override(raw, item)
    return config_from_dict(raw, source=source)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a plain dict (e.g. a suite's per-run settings) into an :class:`ExperimentConfig`."""
    raw = copy.deepcopy(raw)
    _expand_model_preset(raw, source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def dump_config(cfg: ExperimentConfig, path: str | os.PathLike[str] | None = None) -> str:
    """The fully resolved config as YAML text (every default written out); also written to ``path`` atomically."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    if path is not None:
        atomic_write_text(path, text)
    return text


def config_hash(cfg: ExperimentConfig) -> str:
    """SHA-256 of the resolved config (canonical JSON); equal configs have equal hashes."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_yaml_mapping(path: Path, kind: str, expected: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping ({} when empty); one-line :class:`ConfigError` naming the file otherwise.

    ``kind`` names the file in the not-found error ("config", "study"), ``expected`` describes the mapping.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {expected}, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what is wrong and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "config", "sections (data, model, loss, train, eval)")


def _expand_model_preset(raw: dict[str, Any], source: str) -> None:
    """Merge ``configs/models/<preset>.yaml`` (name + params) under the explicit ``model`` settings."""
    model = raw.get("model")
    if not isinstance(model, dict) or not model.get("preset"):
        return
    preset = str(model["preset"])
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else MODEL_PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in MODEL_PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"{source}: model.preset {preset!r} not found; choose one of: {', '.join(available)}")
    preset_data = _read_yaml(path)
    unknown = set(preset_data) - {"name", "params"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a model preset has: name, params")
    model.setdefault("name", preset_data.get("name", ModelConfig.model_fields["name"].default))
    model["params"] = {**(preset_data.get("params") or {}), **(model.get("params") or {})}


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in ``raw`` after checking that the dotted key exists in the schema."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    _check_key(parts, key)
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _check_key(parts: list[str], dotted: str) -> None:
    """Walk the schema along ``parts``; free-form dicts (``params``, ``options``) accept any sub-key."""
    model: type[BaseModel] | None = ExperimentConfig
    for i, part in enumerate(parts):
        if model is None:  # inside a free-form dict
            return
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "top level"
            hint = did_you_mean(part, fields)
            raise ConfigError(f"unknown config key {dotted!r}; allowed keys in {where}: {', '.join(fields)}{hint}")
        annotation = fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if is_section:
            model = annotation
        elif i < len(parts) - 1 and getattr(annotation, "__origin__", None) is not dict:
            raise ConfigError(f"unknown config key {dotted!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        else:
            model = None


def _describe(exc: ValidationError) -> str:
    """One line per pydantic error: ``dotted.key: message (got value)``, with allowed keys for unknown ones."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _section_of(err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else "?"
            hint = did_you_mean(str(err["loc"][-1]), parent.model_fields) if parent else ""
            lines.append(f"unknown key {loc!r}; allowed here: {allowed}{hint}")
        elif err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            named = not loc or msg.startswith((f"{loc}.", f"{loc}:"))
            lines.append(msg if named else f"{loc}: {msg}")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def _section_of(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
