"""`fer train`: CNN stage on augmented stills, then GRU stage on synthetic clips.

Stage "frame" trains encoder + frame head; the best epoch on PublicTest (`test/`) is
kept. Stage "temporal" freezes that encoder and trains the GRU and its correction
layer on clips built from the training split (see clips.py). Every epoch writes
`last.pt` (resumable: optimiser, schedule, RNG, stage) and a metrics CSV row; the
best checkpoint of the run is `best.pt`.
"""

from __future__ import annotations

import csv
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fer_batch import defaults
from fer_batch.labels import EMOTIONS
from fer_batch.model import (
    MODEL_PRESETS, EmotionNet, ModelConfig, checkpoint_payload, load_checkpoint, member_weights, read_checkpoint,
    save_checkpoint,
)
from fer_batch.preprocess import Preprocessing, normalize_crops
from fer_batch.runtime import resolve_device
from fer_batch.training.augment import AugmentConfig, augment_batch
from fer_batch.training.clips import Realism, degrade_like_detections, make_clips
from fer_batch.training.data import FaceDataset, load_split
from fer_batch.training.metrics import classification_report

# A tiny network for smoke runs and tests (`fer train --small`).
SMALL_MODEL = MODEL_PRESETS["small"]
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
# The CNN stage's optimiser and learning-rate schedule, chosen apart (the GRU stage always runs AdamW
# on one cycle): AdamW on one cycle, the recipe of the shipped networks; or SGD with Nesterov momentum,
# its rate cut by `plateau_factor` whenever the accuracy on a slice of the training set held out from
# training (`holdout`) has not risen for `plateau_patience` epochs, the recipe of published single
# networks that reach 73 % on FER2013 (PublicTest still only chooses the best epoch; it steers nothing).
OPTIMIZER_CHOICES = ("adamw", "sgd")
SCHEDULE_CHOICES = ("onecycle", "plateau")
SGD_MOMENTUM = 0.9
# Weight decay by optimiser: AdamW's is decoupled from the gradient, SGD's is an L2 term in it, so
# the same figure means very different things (0.05 as SGD's L2 would hold the weights near zero).
WEIGHT_DECAY = {"adamw": 0.05, "sgd": 5e-4}

METRIC_COLUMNS = (
    "epoch", "stage", "lr", "train_loss", "train_accuracy", "holdout_accuracy", "test_accuracy", "test_macro_f1",
    "clip_accuracy", "seconds",
)


@dataclass
class TrainConfig:
    data: str
    out_dir: str = defaults.TRAIN_OUT_DIR
    epochs: int = defaults.TRAIN_EPOCHS  # CNN epochs; 0 with init_from: the GRU stage alone, on that encoder
    temporal_epochs: int = defaults.TRAIN_TEMPORAL_EPOCHS
    batch_size: int = defaults.TRAIN_BATCH_SIZE
    learning_rate: float = defaults.TRAIN_LEARNING_RATE
    weight_decay: float | None = None  # the CNN stage's; None: WEIGHT_DECAY[optimizer] (the GRU stage: AdamW's)
    label_smoothing: float = 0.1
    class_weight_power: float = 0.3  # loss weight per class = (1 / frequency) ** power
    mixup_alpha: float = defaults.TRAIN_MIXUP_ALPHA  # mixup on the CNN stage's crops: Beta(alpha, alpha) shares; 0: off
    clips_per_epoch: int = defaults.TRAIN_CLIPS_PER_EPOCH
    clip_length: int = 12
    realistic_clips: bool = False  # the GRU stage trains on clips with real video's shake, blur and artefacts (clips.Realism)
    realistic_stills: float = defaults.TRAIN_REALISTIC_STILLS  # share of CNN-stage crops degraded like real detections (clips.degrade_like_detections)
    seed: int = defaults.TRAIN_SEED
    device: str = defaults.DEVICE
    limit_train: int | None = None  # smoke runs: use only this many training images
    limit_test: int | None = None
    init_from: str | None = None  # start from this checkpoint's weights, on a fresh schedule (fine-tuning)
    init_member: int | None = None  # with an ensemble init_from: which member (1-based) to start from
    precision: str = defaults.TRAIN_PRECISION
    tta_flip: bool = defaults.TRAIN_TTA_FLIP  # flip averaging at evaluation (and stored for annotate); off = half the inference cost
    teacher: str | None = None  # distil from this checkpoint (e.g. the shipped ensemble) on the same augmented crops
    distill_weight: float = defaults.TRAIN_DISTILL_WEIGHT  # share of the distillation term in the loss when a teacher is given
    distill_temperature: float = defaults.TRAIN_DISTILL_TEMPERATURE
    eval_every: int = defaults.TRAIN_EVAL_EVERY  # PublicTest evaluation every N CNN epochs; always in the last fifth and the GRU stage
    optimizer: str = defaults.TRAIN_OPTIMIZER  # the CNN stage's: adamw or sgd (Nesterov momentum); OPTIMIZER_CHOICES
    schedule: str = defaults.TRAIN_SCHEDULE  # the CNN stage's: onecycle or plateau (steered by the held-out slice)
    holdout: float = defaults.TRAIN_HOLDOUT  # share of the training images held out of training, scored every CNN epoch
    plateau_patience: int = defaults.TRAIN_PLATEAU_PATIENCE  # CNN epochs without a better held-out accuracy before the rate is cut
    plateau_factor: float = defaults.TRAIN_PLATEAU_FACTOR  # the rate's cut on a plateau
    model: ModelConfig = field(default_factory=lambda: MODEL_PRESETS[defaults.TRAIN_MODEL])
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data


@dataclass
class TrainResult:
    best_checkpoint: Path | None  # None while no epoch has been scored on PublicTest (a run stopped early)
    last_checkpoint: Path
    metrics_csv: Path
    best_test_accuracy: float | None
    epochs_done: int


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 convolutions natively (AVX512-BF16 or AMX), i.e. faster than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training steps, or None for plain fp32."""
    if name not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {name!r}; use one of {', '.join(PRECISION_CHOICES)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if name == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _limit(dataset: FaceDataset, limit: int | None, seed: int) -> FaceDataset:
    if limit is None or limit >= len(dataset):
        return dataset
    indices = np.random.default_rng(seed).permutation(len(dataset))[:limit]
    return dataset.subset(np.sort(indices))


def split_holdout(dataset: FaceDataset, share: float, seed: int) -> tuple[FaceDataset, FaceDataset | None]:
    """(images to train on, images held out of training): a `share` of the images drawn with `seed`,
    the same on every run and resume of that seed; (dataset, None) for a share of 0."""
    count = int(round(share * len(dataset)))
    if count == 0:
        return dataset, None
    order = np.random.default_rng(seed + 1).permutation(len(dataset))
    return dataset.subset(np.sort(order[count:])), dataset.subset(np.sort(order[:count]))


@torch.no_grad()
def predict_stills(
    model: EmotionNet, dataset: FaceDataset, preprocessing: Preprocessing, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """CNN-GRU class probabilities of each still (a sequence of one), with the checkpoint's TTA."""
    model.eval()
    outputs = []
    for start in range(0, len(dataset), batch_size):
        crops = normalize_crops(dataset.images[start : start + batch_size], preprocessing).to(device)
        features = model.encode(crops, flip_average=preprocessing.tta_flip)
        logits, _ = model.sequence_logits(features.unsqueeze(1))
        outputs.append(torch.softmax(logits.squeeze(1).float(), dim=1).cpu())
    return torch.cat(outputs).numpy()


@torch.no_grad()
def clip_probabilities(
    model: EmotionNet, frames: torch.Tensor, preprocessing: Preprocessing, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(frame head, CNN-GRU) probabilities, each (B, T, C), of (B, T, 1, H, W) clips."""
    model.eval()
    frame_parts, sequence_parts = [], []
    clips_per_batch = max(1, 256 // frames.shape[1])
    for start in range(0, frames.shape[0], clips_per_batch):
        chunk = frames[start : start + clips_per_batch]
        clips, length = chunk.shape[:2]
        features = model.encode(chunk.flatten(0, 1).to(device), flip_average=preprocessing.tta_flip)
        features = features.view(clips, length, -1)
        frame_parts.append(torch.softmax(model.frame_logits(features).float(), dim=-1).cpu())
        sequence, _ = model.sequence_logits(features)
        sequence_parts.append(torch.softmax(sequence.float(), dim=-1).cpu())
    return torch.cat(frame_parts).numpy(), torch.cat(sequence_parts).numpy()


def predict_clips(
    model: EmotionNet, frames: torch.Tensor, preprocessing: Preprocessing, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame labels of (B, T, 1, H, W) clips: (CNN alone, CNN-GRU), each (B, T)."""
    frame_probabilities, sequence_probabilities = clip_probabilities(model, frames, preprocessing, device)
    return frame_probabilities.argmax(-1), sequence_probabilities.argmax(-1)


class Trainer:
    """Runs both stages with per-epoch checkpoints; `resume` continues from last.pt."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.out_dir = Path(config.out_dir)
        self.device = resolve_device(config.device)
        self.preprocessing = Preprocessing(tta_flip=config.tta_flip)
        self.generator = _seed_everything(config.seed)
        self._check_recipe()
        train = load_split(config.data, "train")
        test = load_split(config.data, "test")
        self.train_set, self.holdout_set = split_holdout(
            _limit(train, config.limit_train, config.seed), config.holdout, config.seed)
        if config.schedule == "plateau" and self.holdout_set is None:
            raise ValueError(f"a holdout share of {config.holdout} of {len(self.train_set)} training images is no image")
        self.test_set = _limit(test, config.limit_test, config.seed)
        self.class_names: tuple[str, ...] = EMOTIONS
        # channels_last lets oneDNN / cuDNN pick their fastest convolutions (about 1.3x on CPU).
        self.model = EmotionNet(config.model).to(self.device, memory_format=torch.channels_last)
        counts = np.maximum(self.train_set.class_counts(), 1).astype(np.float64)
        weights = (counts.sum() / counts) ** config.class_weight_power
        self.class_weights = torch.tensor(weights / weights.mean(), dtype=torch.float32, device=self.device)
        # The GRU stage's clips: plain, or with real video's shake, blur, artefacts and missed frames.
        self.clip_realism = Realism() if config.realistic_clips else None
        # Fixed PublicTest clips, so clip accuracy is comparable between epochs; of the kind the
        # GRU trains on, so the epoch chosen is the best on such clips.
        self.test_clips = make_clips(
            self.test_set, min(400, 4 * len(self.test_set)), config.clip_length, self.preprocessing,
            torch.Generator().manual_seed(12345), realism=self.clip_realism,
        ).tracked()
        self.epoch = 0
        self.stage = "frame"
        self.best_score = -math.inf
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if not 0.0 <= config.realistic_stills <= 1.0:
            raise ValueError(f"realistic_stills is a share of the crops, from 0 to 1; got {config.realistic_stills}")
        if config.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {config.eval_every}")
        if config.epochs < 0 or (config.epochs == 0 and not config.init_from):
            raise ValueError(f"epochs is {config.epochs}: it must be at least 1, or 0 with init_from "
                             "(--init-from), the trained encoder a run of the GRU stage alone starts from")
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.teacher = self._load_teacher(config.teacher) if config.teacher else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)

    def _check_recipe(self) -> None:
        config = self.config
        if config.optimizer not in OPTIMIZER_CHOICES:
            raise ValueError(f"unknown optimizer {config.optimizer!r}; use one of {', '.join(OPTIMIZER_CHOICES)}")
        if config.schedule not in SCHEDULE_CHOICES:
            raise ValueError(f"unknown schedule {config.schedule!r}; use one of {', '.join(SCHEDULE_CHOICES)}")
        if not 0.0 <= config.holdout < 0.5:
            raise ValueError(f"holdout is a share of the training images, from 0 to under 0.5; got {config.holdout}")
        if config.schedule == "plateau" and config.holdout == 0:
            raise ValueError("the plateau schedule is steered by images held out of training: give a holdout share "
                             "(--holdout, e.g. 0.1); PublicTest only chooses the best epoch")
        if config.plateau_patience < 0 or not 0.0 < config.plateau_factor < 1.0:
            raise ValueError(f"plateau_patience must be 0 or more and plateau_factor in (0, 1); got "
                             f"{config.plateau_patience} and {config.plateau_factor}")

    def _load_teacher(self, path: str) -> torch.nn.Module:
        """The network to distil from, frozen; its classes must be this run's."""
        checkpoint = load_checkpoint(path, self.device)
        if tuple(checkpoint.class_names) != self.class_names:
            raise ValueError(f"{path}: the teacher predicts {checkpoint.class_names}, this run {self.class_names}")
        if not 0.0 < self.config.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in (0, 1], got {self.config.distill_weight}")
        teacher = checkpoint.model.to(self.device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        self.log(f"distilling from {path} (weight {self.config.distill_weight}, temperature {self.config.distill_temperature})")
        return teacher

    # -- set-up of each stage -------------------------------------------------------
    def _steps_per_epoch(self) -> int:
        if self.stage == "frame":
            return max(1, len(self.train_set) // self.config.batch_size)
        return max(1, self.config.clips_per_epoch // max(1, self.config.batch_size // 4))

    def _start_stage(self, stage: str) -> None:
        self.stage = stage
        self.best_score = -math.inf
        if stage == "frame":
            parameters = list(self.model.encoder.parameters()) + list(self.model.frame_head.parameters())
            epochs = self.config.epochs
        else:
            for parameter in self.model.parameters():
                parameter.requires_grad_(False)
            parameters = list(self.model.gru.parameters()) + list(self.model.temporal_head.parameters())
            for parameter in parameters:
                parameter.requires_grad_(True)
            epochs = self.config.temporal_epochs
        if stage == "frame" and self.config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(parameters, lr=self.config.learning_rate, momentum=SGD_MOMENTUM,
                                             nesterov=True, weight_decay=self._weight_decay())
        else:
            self.optimizer = torch.optim.AdamW(parameters, lr=self.config.learning_rate, weight_decay=(
                self._weight_decay() if stage == "frame" else WEIGHT_DECAY["adamw"]))
        if self._on_plateau_recipe():
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=self.config.plateau_factor, patience=self.config.plateau_patience)
            return
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=self.config.learning_rate if stage == "frame" else self.config.learning_rate / 3,
            total_steps=max(1, epochs) * self._steps_per_epoch(),
            pct_start=0.15,
        )

    def _on_plateau_recipe(self) -> bool:
        """Whether this stage's rate is cut on plateaus of the held-out accuracy (once an epoch), not
        moved every step on one cycle: the CNN stage of a plateau run."""
        return self.stage == "frame" and self.config.schedule == "plateau"

    def _weight_decay(self) -> float:
        """The CNN stage's weight decay: the run's, else its optimiser's default (WEIGHT_DECAY)."""
        return self.config.weight_decay if self.config.weight_decay is not None else WEIGHT_DECAY[self.config.optimizer]

    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- checkpoints ------------------------------------------------------------------
    def _payload(self, metrics: dict) -> dict:
        return checkpoint_payload(
            self.model,
            self.class_names,
            self.preprocessing,
            epoch=self.epoch,
            stage=self.stage,
            best_score=self.best_score,
            optimizer_state=self.optimizer.state_dict() if self.optimizer else None,
            scheduler_state=self.scheduler.state_dict() if self.scheduler else None,
            rng_state=self.generator.get_state(),
            torch_rng_state=torch.get_rng_state(),
            training_config=self.config.to_dict(),
            metrics=metrics,
        )

    def resume(self) -> bool:
        last = self.out_dir / "last.pt"
        if not last.is_file():
            return False
        payload = read_checkpoint(last, self.device)
        self.model.load_state_dict(payload["model_state"])
        self.epoch = int(payload["epoch"])
        self._start_stage(payload["stage"])
        self.best_score = float(payload["best_score"])
        if payload.get("optimizer_state"):
            self.optimizer.load_state_dict(payload["optimizer_state"])
        saved = payload.get("training_config", {})
        budget_key = "epochs" if self.stage == "frame" else "temporal_epochs"
        on_plateau = self._on_plateau_recipe()  # a plateau schedule has no budget to change: its state goes on as saved
        same_schedule = on_plateau or saved.get(budget_key) == getattr(self.config, budget_key)
        if same_schedule and payload.get("scheduler_state"):
            self.scheduler.load_state_dict(payload["scheduler_state"])
        elif not on_plateau:
            # The epoch budget changed on resume: continue on the new schedule from the current step.
            stage_start = 0 if self.stage == "frame" else self.config.epochs
            self.scheduler.last_epoch = (self.epoch - stage_start) * self._steps_per_epoch() - 1
            with warnings.catch_warnings():  # stepping the schedule before the optimiser is intended here
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            self.log(f"epoch budget changed ({saved.get(budget_key)} -> {getattr(self.config, budget_key)}): schedule rebuilt")
        self.generator.set_state(payload["rng_state"])
        torch.set_rng_state(payload["torch_rng_state"])
        self.log(f"resumed from {last}: stage {self.stage}, epoch {self.epoch}")
        return True

    def _load_initial_weights(self, path: Path, member: int | None = None) -> None:
        payload = read_checkpoint(path, self.device)
        origin = f"member {member} of {path}" if member is not None else f"{path} (epoch {payload.get('epoch')})"
        config, state = member_weights(payload, member, str(path))
        if config != self.config.model:
            raise ValueError(f"{origin}: its model configuration differs from this run's; cannot start from it")
        self.model.load_state_dict(state)
        self.log(f"starting from the weights of {origin}")

    # -- epochs -----------------------------------------------------------------------
    def _frame_epoch(self, progress: tqdm) -> tuple[float, float]:
        self.model.train()
        order = torch.randperm(len(self.train_set), generator=self.generator).numpy()
        total_loss, correct, seen = 0.0, 0, 0
        for step in range(self._steps_per_epoch()):
            batch = order[step * self.config.batch_size : (step + 1) * self.config.batch_size]
            crops = augment_batch(
                normalize_crops(self.train_set.images[batch], self.preprocessing), self.config.augment, self.generator
            )
            if self.config.realistic_stills > 0:  # some crops look like the detect path's: warped, small, blurred, JPEG
                crops = degrade_like_detections(
                    crops, self.config.realistic_stills, Realism(), self.preprocessing, self.generator
                )
            crops = crops.to(self.device, memory_format=torch.channels_last)
            targets = torch.from_numpy(self.train_set.labels[batch]).to(self.device)
            mixing = self._mixing(len(batch))
            if mixing is not None:  # mixup: each crop blended with another's, the labels in the same shares
                share, partner = mixing
                crops = share * crops + (1 - share) * crops[partner]
            with self._autocast():
                logits = self.model.frame_logits(self.model.encode(crops))
                loss = self._loss(logits, targets)
                if mixing is not None:
                    loss = share * loss + (1 - share) * self._loss(logits, targets[partner])
                if self.teacher is not None:  # the teacher answers on the same blended crops
                    loss = self._distilled_loss(loss, logits, crops)
            self._step(loss)
            total_loss += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(batch)
            progress.update(1)
            progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        return total_loss / seen, correct / seen

    def _mixing(self, count: int) -> tuple[float, torch.Tensor] | None:
        """Mixup's share of the first crop (Beta(alpha, alpha)) and each crop's partner, drawn from
        the run's generator (a resumed or repeated run draws the same); None without mixup."""
        alpha = self.config.mixup_alpha
        if alpha <= 0:
            return None
        draw = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
        share = float(draw.beta(alpha, alpha))
        return share, torch.randperm(count, generator=self.generator).to(self.device)

    def _temporal_epoch(self, progress: tqdm) -> tuple[float, float]:
        self.model.eval()  # frozen encoder: BatchNorm statistics stay those of the best frame epoch
        self.model.gru.train()
        clips_per_step = max(1, self.config.batch_size // 4)
        total_loss, correct, seen = 0.0, 0, 0
        for _ in range(self._steps_per_epoch()):
            clips = make_clips(self.train_set, clips_per_step, self.config.clip_length, self.preprocessing, self.generator,
                               realism=self.clip_realism).tracked()
            with torch.no_grad(), self._autocast():
                frames = clips.frames.flatten(0, 1).to(self.device)
                features = self.model.encode(frames, flip_average=self.preprocessing.tta_flip)
                features = features.view(clips_per_step, self.config.clip_length, -1).float()
            valid = clips.valid.to(self.device)  # missed frames trail each row: the GRU's outputs before them are exact
            targets = clips.labels.to(self.device)[valid]
            logits, _ = self.model.sequence_logits(features)
            logits = logits[valid]
            loss = self._loss(logits, targets)
            self._step(loss)
            total_loss += float(loss.detach()) * targets.numel()
            correct += int((logits.argmax(-1) == targets).sum())
            seen += targets.numel()
            progress.update(1)
            progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        return total_loss / seen, correct / seen

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        )

    def _should_evaluate(self) -> bool:
        """Skip PublicTest on early CNN epochs when asked: under one-cycle the best epoch comes late."""
        if self.stage != "frame" or self.config.eval_every == 1:
            return True
        return (
            self.epoch % self.config.eval_every == 0
            or self.epoch >= self.config.epochs - max(1, self.config.epochs // 5)
        )

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), targets, weight=self.class_weights, label_smoothing=self.config.label_smoothing
        )

    def _distilled_loss(self, label_loss: torch.Tensor, logits: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        """Hinton's knowledge distillation: the teacher's softened answer on the very same augmented crops."""
        with torch.no_grad():
            teacher_logits = self.teacher.frame_logits(self.teacher.encode(crops)).float()
        temperature = self.config.distill_temperature
        distill = F.kl_div(
            torch.log_softmax(logits.float() / temperature, dim=1),
            torch.log_softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean", log_target=True,
        ) * temperature**2
        weight = self.config.distill_weight
        return (1 - weight) * label_loss + weight * distill

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not self._on_plateau_recipe():  # a plateau schedule moves once an epoch, on the held-out accuracy
            self.scheduler.step()

    def _holdout_accuracy(self) -> float | None:
        """Accuracy on the images held out of training (None without a holdout)."""
        if self.holdout_set is None:
            return None
        probabilities = predict_stills(self.model, self.holdout_set, self.preprocessing, self.device)
        return float((probabilities.argmax(1) == self.holdout_set.labels).mean())

    def _holdout_text(self, accuracy: float | None) -> str:
        return "" if accuracy is None else f" held-out acc {accuracy:.3f} (lr now {self.learning_rate():.2e})"

    def _evaluate(self) -> dict:
        probabilities = predict_stills(self.model, self.test_set, self.preprocessing, self.device)
        report = classification_report(self.test_set.labels, probabilities.argmax(1), self.class_names)
        metrics = {"test_accuracy": report.accuracy, "test_macro_f1": report.macro_f1}
        if self.stage == "temporal":  # in the frame stage the GRU is untouched, clips add nothing
            _, sequence_labels = predict_clips(self.model, self.test_clips.frames, self.preprocessing, self.device)
            scored = self.test_clips.valid.numpy()
            metrics["clip_accuracy"] = float((sequence_labels == self.test_clips.labels.numpy())[scored].mean())
        return metrics

    def _append_metrics(self, row: dict) -> Path:
        path = self.out_dir / "metrics.csv"
        columns = METRIC_COLUMNS
        if path.is_file():  # a run resumed from an older version keeps its file's columns
            with open(path, newline="") as handle:
                columns = tuple(next(csv.reader(handle), METRIC_COLUMNS))
        new_file = not path.is_file()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            if new_file:
                writer.writeheader()
            writer.writerow({key: row.get(key, "") for key in columns})
        return path

    def run(self, resume: bool = False, show_progress: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to the configured end, or only `stop_after` more epochs (continue later with resume)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            if self.config.init_from:
                self._load_initial_weights(Path(self.config.init_from), self.config.init_member)
            self._start_stage("frame" if self.config.epochs > 0 else "temporal")
        total_epochs = self.config.epochs + self.config.temporal_epochs
        if stop_after is not None:
            total_epochs = min(total_epochs, self.epoch + stop_after)
        while self.epoch < total_epochs:
            if self.stage == "frame" and self.epoch >= self.config.epochs:
                best = read_checkpoint(self.out_dir / "best.pt", self.device)
                self.model.load_state_dict(best["model_state"])
                self._start_stage("temporal")
            started = time.time()
            description = f"{self.stage} epoch {self.epoch + 1}/{total_epochs}"
            with tqdm(total=self._steps_per_epoch(), desc=description, disable=not show_progress, leave=False) as bar:
                run_epoch = self._frame_epoch if self.stage == "frame" else self._temporal_epoch
                train_loss, train_accuracy = run_epoch(bar)
            self.epoch += 1
            rate = self.learning_rate()  # the rate this epoch ran at (its last step's)
            holdout = self._holdout_accuracy() if self.stage == "frame" else None
            if self._on_plateau_recipe():
                self.scheduler.step(holdout)
            evaluated = self._should_evaluate()
            metrics = self._evaluate() if evaluated else {}
            row = {
                "epoch": self.epoch, "stage": self.stage, "lr": rate, "holdout_accuracy": holdout,
                "train_loss": train_loss, "train_accuracy": train_accuracy, "seconds": time.time() - started,
                **metrics,
            }
            if not evaluated:
                save_checkpoint(self._payload(row), self.out_dir / "last.pt")
                self._append_metrics(row)
                self.log(
                    f"{description}: loss {train_loss:.3f} train acc {train_accuracy:.3f}{self._holdout_text(holdout)} | PublicTest not "
                    f"evaluated (every {self.config.eval_every} epochs) | {row['seconds']:.0f}s"
                )
                continue
            score = metrics["test_accuracy"] if self.stage == "frame" else (
                metrics["test_accuracy"] + metrics["clip_accuracy"]
            ) / 2
            improved = score > self.best_score
            if improved:
                self.best_score = score
            payload = self._payload(row)
            save_checkpoint(payload, self.out_dir / "last.pt")
            if improved:
                save_checkpoint(payload, self.out_dir / "best.pt")
            self._append_metrics(row)
            self.log(
                f"{description}: loss {train_loss:.3f} train acc {train_accuracy:.3f}{self._holdout_text(holdout)} | PublicTest acc "
                f"{metrics['test_accuracy']:.4f} macro-F1 {metrics['test_macro_f1']:.4f} clip acc "
                f"{metrics.get('clip_accuracy', float('nan')):.4f} | {row['seconds']:.0f}s{' *best*' if improved else ''}"
            )
        best_path = self.out_dir / "best.pt"
        scored = best_path.is_file()  # not when stopped (--stop-after) before the first epoch PublicTest scores
        best_accuracy = float(read_checkpoint(best_path)["metrics"]["test_accuracy"]) if scored else None
        return TrainResult(best_path if scored else None, self.out_dir / "last.pt", self.out_dir / "metrics.csv",
                           best_accuracy, self.epoch)


def train(
    config: TrainConfig,
    resume: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> TrainResult:
    return Trainer(config, log=log).run(resume=resume, show_progress=show_progress, stop_after=stop_after)
