"""The CNN-GRU emotion network and its checkpoint format.

A CNN encoder turns each 48x48 grayscale crop into a feature vector; a frame head
gives per-crop logits (the "CNN alone" answer); a GRU runs over a track's sequence
of features and adds a learned correction to the frame logits, so a still image is
simply a sequence of one. The correction layer starts at zero, which makes the
CNN-GRU equal to the CNN before its temporal training stage. A checkpoint holds one
such network or an ensemble of several, averaged in probability.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_batch.labels import EMOTIONS
from fer_batch.preprocess import Preprocessing

CHECKPOINT_FORMAT = 1
ENSEMBLE_KEY = "ensemble"  # an ensemble checkpoint lists its members' model_config/model_state here


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; stored in checkpoints to rebuild the model."""

    stage_channels: tuple[int, ...] = (32, 64, 128, 256)
    convs_per_stage: tuple[int, ...] = (1, 1, 2, 2)
    gru_hidden: int = 128
    dropout: float = 0.3
    num_classes: int = len(EMOTIONS)

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**values)


# Named architectures for `fer train --model`. "base" is ModelConfig()'s defaults;
# "wide" has 2.8x its multiply-accumulates and trains well only with bf16 or a GPU;
# "large" (about 6x base) is for GPU training;
# "small" is for smoke runs and tests.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "base": ModelConfig(),
    "wide": ModelConfig(stage_channels=(48, 96, 192, 384), convs_per_stage=(1, 2, 2, 2)),
    "large": ModelConfig(stage_channels=(64, 128, 256, 512), convs_per_stage=(2, 2, 2, 2)),
    "small": ModelConfig(stage_channels=(8, 16, 16, 32), convs_per_stage=(1, 1, 1, 1), gru_hidden=16),
}


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class CropEncoder(nn.Module):
    """VGG-style stages (3x3 conv, BN, ReLU, 2x2 max-pool) ending in global average pooling."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for channels, convs in zip(config.stage_channels, config.convs_per_stage):
            for _ in range(convs):
                layers += _conv_bn_relu(in_channels, channels)
                in_channels = channels
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output_dim = in_channels

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(crops)).flatten(1)


class EmotionNet(nn.Module):
    """CNN encoder + frame head + GRU temporal correction."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = CropEncoder(config)
        feature_dim = self.encoder.output_dim
        self.frame_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(feature_dim, config.num_classes))
        self.gru = nn.GRU(feature_dim, config.gru_hidden, batch_first=True)
        self.temporal_head = nn.Linear(config.gru_hidden, config.num_classes)
        nn.init.zeros_(self.temporal_head.weight)
        nn.init.zeros_(self.temporal_head.bias)

    def encode(self, crops: torch.Tensor, flip_average: bool = False) -> torch.Tensor:
        """Features of (N, 1, H, W) crops; with flip_average, the mean over the crop and its mirror."""
        if not flip_average:
            return self.encoder(crops)
        both = torch.cat([crops, crops.flip(-1)], dim=0)
        features = self.encoder(both)
        return 0.5 * (features[: crops.shape[0]] + features[crops.shape[0] :])

    def frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.frame_head(features)

    def sequence_logits(
        self, features: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for features shaped (B, T, D); returns (logits (B, T, C), last hidden (1, B, H))."""
        outputs, last_hidden = self.gru(features, hidden)
        logits = self.frame_head(features) + self.temporal_head(outputs)
        return logits, last_hidden

    @property
    def hidden_size(self) -> int:
        """Width of the per-track state the classifier keeps between frames."""
        return self.gru.hidden_size

    @property
    def feature_size(self) -> int:
        """Width of a crop's CNN feature vector (the GRU's input)."""
        return self.encoder.output_dim

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Still-image logits: each crop is a sequence of one."""
        features = self.encode(crops)
        logits, _ = self.sequence_logits(features.unsqueeze(1))
        return logits.squeeze(1)


class EmotionEnsemble(nn.Module):
    """Several independently trained CNN-GRUs whose probabilities are averaged.

    Networks trained from different seeds make different mistakes, so their mean is
    more accurate than any one of them. The ensemble has EmotionNet's interface:
    features and GRU states are the members' concatenated, so the classifier keeps one
    state per track whatever it runs, and the logits are log mean probabilities
    (their softmax is the mean of the members' softmaxes).
    """

    def __init__(self, members: list[EmotionNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        classes = {member.config.num_classes for member in members}
        if len(classes) != 1:
            raise ValueError(f"ensemble members predict different numbers of classes: {sorted(classes)}")
        self.members = nn.ModuleList(members)
        self._feature_sizes = [member.encoder.output_dim for member in members]
        self._hidden_sizes = [member.hidden_size for member in members]

    @property
    def hidden_size(self) -> int:
        return sum(self._hidden_sizes)

    @property
    def feature_size(self) -> int:
        return sum(self._feature_sizes)

    def encode(self, crops: torch.Tensor, flip_average: bool = False) -> torch.Tensor:
        return torch.cat([member.encode(crops, flip_average) for member in self.members], dim=-1)

    @staticmethod
    def _mean_log_probabilities(member_logits: list[torch.Tensor]) -> torch.Tensor:
        log_probabilities = torch.stack([torch.log_softmax(logits.float(), dim=-1) for logits in member_logits])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(member_logits))

    def frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        parts = features.split(self._feature_sizes, dim=-1)
        return self._mean_log_probabilities([member.frame_logits(part) for member, part in zip(self.members, parts)])

    def sequence_logits(
        self, features: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feature_parts = features.split(self._feature_sizes, dim=-1)
        hidden_parts = hidden.split(self._hidden_sizes, dim=-1) if hidden is not None else [None] * len(self.members)
        member_logits, member_hidden = [], []
        for member, part, state in zip(self.members, feature_parts, hidden_parts):
            logits, last_hidden = member.sequence_logits(part, state.contiguous() if state is not None else None)
            member_logits.append(logits)
            member_hidden.append(last_hidden)
        return self._mean_log_probabilities(member_logits), torch.cat(member_hidden, dim=-1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        features = self.encode(crops)
        logits, _ = self.sequence_logits(features.unsqueeze(1))
        return logits.squeeze(1)


EmotionModel = EmotionNet | EmotionEnsemble


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def encoder_macs_per_crop(config: ModelConfig, crop_size: int = 48) -> int:
    """Multiply-accumulates of the encoder for one crop (convolutions dominate)."""
    macs = 0
    size = crop_size
    in_channels = 1
    for channels, convs in zip(config.stage_channels, config.convs_per_stage):
        for _ in range(convs):
            macs += size * size * in_channels * channels * 9
            in_channels = channels
        size //= 2
    return macs


def model_macs_per_crop(model: EmotionModel, crop_size: int = 48) -> int:
    """Encoder multiply-accumulates per crop, summed over an ensemble's members."""
    members = model.members if isinstance(model, EmotionEnsemble) else [model]
    return sum(encoder_macs_per_crop(member.config, crop_size) for member in members)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model plus what is needed to use or resume it."""

    model: EmotionModel
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    path: Path | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # the encoder's arithmetic: fp32 or int8 (fer_batch.quantize)
    has_int8_encoders: bool = False  # the file carries int8 encoders, whatever this load runs in

    @property
    def name(self) -> str:
        return self.path.name if self.path else "<in-memory>"


def checkpoint_payload(
    model: EmotionNet,
    class_names: tuple[str, ...],
    preprocessing: Preprocessing,
    **extra: Any,
) -> dict[str, Any]:
    """The dict written to disk: rebuilds the model and carries training state in `extra`."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": model.config.to_dict(),
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "model_state": model.state_dict(),
        **extra,
    }


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Atomic save: a crash while writing never corrupts the previous checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensemble_payload(member_payloads: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One checkpoint holding several trained networks; labels and preprocessing must agree."""
    if not member_payloads:
        raise ValueError("an ensemble needs at least one member checkpoint")
    first = member_payloads[0]
    for number, member in enumerate(member_payloads, start=1):
        if ENSEMBLE_KEY in member:
            raise ValueError(f"member {number} is itself an ensemble; combine its members instead")
        if list(member["class_names"]) != list(first["class_names"]):
            raise ValueError(f"member {number} predicts {member['class_names']}, member 1 {first['class_names']}")
        if member["preprocessing"] != first["preprocessing"]:
            raise ValueError(f"member {number} preprocesses crops differently from member 1")
    return {
        "format": CHECKPOINT_FORMAT,
        "class_names": list(first["class_names"]),
        "preprocessing": first["preprocessing"],
        ENSEMBLE_KEY: [
            {"model_config": member["model_config"], "model_state": member["model_state"]} for member in member_payloads
        ],
        **extra,
    }


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict of a file; the only place a checkpoint file is opened."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # int8 encoders (fer_batch.quantize) unpickle through deprecated paths
            warnings.filterwarnings("ignore", message=r".*(TypedStorage is deprecated|quantized tensor creation).*")
            payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{path}: not a readable fer-batch checkpoint ({error})") from error
    if not isinstance(payload, dict) or not ("model_state" in payload or ENSEMBLE_KEY in payload):
        raise ValueError(f"{path}: not a fer-batch checkpoint (no model_state or ensemble members)")
    return payload


def checkpoint_members(payload: dict[str, Any], origin: str = "") -> list[dict[str, Any]]:
    """A checkpoint as single-network payloads: itself, or each member of an ensemble with its
    recorded lineage (`exported_from`), metrics and training config."""
    if ENSEMBLE_KEY not in payload:
        return [payload]
    entries = payload[ENSEMBLE_KEY]
    count = len(entries)
    origins = payload.get("exported_from") or [f"{origin}#{index}" for index in range(count)]
    metrics = payload.get("member_metrics") or [None] * count
    configs = payload.get("member_training_configs") or [None] * count
    return [
        {
            "format": payload["format"],
            "model_config": entry["model_config"],
            "class_names": payload["class_names"],
            "preprocessing": payload["preprocessing"],
            "model_state": entry["model_state"],
            "metrics": metrics[index],
            "training_config": configs[index],
            "exported_from": origins[index],
        }
        for index, entry in enumerate(entries)
    ]


def member_weights(payload: dict[str, Any], member: int | None, origin: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """One network's architecture and fp32 weights, for fine-tuning: the network of a single
    checkpoint, or member `member` (1-based) of an ensemble."""
    members = checkpoint_members(payload, origin)
    if ENSEMBLE_KEY in payload:
        if member is None:
            raise ValueError(f"{origin}: an ensemble checkpoint of {len(members)} members; choose one with --init-member")
        if not 1 <= member <= len(members):
            raise ValueError(f"{origin}: --init-member {member} is out of range (members 1 to {len(members)})")
    elif member is not None:
        raise ValueError(f"{origin}: not an ensemble checkpoint; --init-member applies only to ensembles")
    chosen = members[(member or 1) - 1]
    # Exported ensembles may store fp16 weights (export --half); training runs in fp32.
    state = {name: value.float() if value.is_floating_point() else value for name, value in chosen["model_state"].items()}
    return ModelConfig.from_dict(chosen["model_config"]), state


def _member_from_payload(payload: dict[str, Any]) -> EmotionNet:
    if "model_config" not in payload:
        raise ValueError("not a fer-batch checkpoint (a network without its model_config)")
    member = EmotionNet(ModelConfig.from_dict(payload["model_config"]))
    member.load_state_dict(payload["model_state"])
    return member


def load_checkpoint(
    path: Path | str,
    map_location: str | torch.device = "cpu",
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> Checkpoint:
    """Rebuild the model from a checkpoint file; labels and preprocessing come from the file.

    `precision` (auto, fp32, int8) is the encoder's arithmetic on `device`, where the model
    will run: int8 swaps in the int8 encoders the file stores (fer_batch.quantize).
    """
    from fer_batch.quantize import INT8_KEY, apply_int8, resolve_precision

    path = Path(path)
    payload = read_checkpoint(path, map_location)
    resolved = resolve_precision(precision, torch.device(device), INT8_KEY in payload)
    members = [_member_from_payload(member) for member in checkpoint_members(payload, str(path))]
    model: EmotionModel = EmotionEnsemble(members) if ENSEMBLE_KEY in payload else members[0]
    preprocessing = Preprocessing.from_dict(payload["preprocessing"])
    # channels_last: the layout oneDNN / cuDNN convolve fastest (about 1.3x on CPU), as in training.
    model.to(memory_format=torch.channels_last).eval()
    if resolved == "int8":
        apply_int8(model, payload[INT8_KEY], preprocessing.crop_size)
    known = {"format", "model_config", "class_names", "preprocessing", "model_state", ENSEMBLE_KEY, INT8_KEY}
    return Checkpoint(
        model=model,
        class_names=tuple(payload["class_names"]),
        preprocessing=preprocessing,
        path=path,
        sha256=file_sha256(path),
        extra={key: value for key, value in payload.items() if key not in known},
        precision=resolved,
        has_int8_encoders=INT8_KEY in payload,
    )


def load_media_checkpoints(
    weights: str | Path | None, video_weights: str | Path | None, **load: Any
) -> dict[str, Checkpoint]:
    """The checkpoint that classifies each media type ("image", "video"; defaults.weights_by_media_type),
    each distinct file loaded once (`load`: load_checkpoint's options), the pair checked to read
    the same faces."""
    from fer_batch.defaults import weights_by_media_type

    loaded: dict[Path, Checkpoint] = {}
    checkpoints = {}
    for media_type, path in weights_by_media_type(weights, video_weights).items():
        if path.resolve() not in loaded:
            loaded[path.resolve()] = load_checkpoint(path, **load)
        checkpoints[media_type] = loaded[path.resolve()]
    check_same_faces(checkpoints["image"], checkpoints["video"])
    return checkpoints


def check_same_faces(photo: Checkpoint, video: Checkpoint) -> None:
    """One run classifies photos and videos with two checkpoints into one table: they must name the
    same emotions in the same order and read the same crop (the crop stage cuts each face once)."""
    if photo.class_names != video.class_names:
        raise ValueError(
            f"the video weights {video.name} predict {', '.join(video.class_names)}; the photo weights "
            f"{photo.name} predict {', '.join(photo.class_names)}: one run needs the same emotions in the same order"
        )
    if (photo.preprocessing.crop_size, photo.preprocessing.landmarks) != (video.preprocessing.crop_size, video.preprocessing.landmarks):
        raise ValueError(
            f"the video weights {video.name} read a different face crop (size and landmark template) from the "
            f"photo weights {photo.name}: one run cuts each face once, so both must read the same crop"
        )
