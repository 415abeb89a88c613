"""`fer evaluate`: metrics, confusion matrix, sample grid and clip stability of a checkpoint.

Faces come either pre-cropped (FER2013 CSV or <emotion>/ image folders) or, with
`detect=True`, from whole photos in <emotion>/ folders, cut by the same detection
and alignment code as `fer annotate`; a photo with no face is an error, reported.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm import tqdm

from fer_batch import defaults
from fer_batch.labels import EMOTIONS, emotion_index
from fer_batch.model import Checkpoint, load_checkpoint
from fer_batch.plots import confusion_matrix_png, per_class_bars_png, sample_grid_png
from fer_batch.runtime import resolve_device
from fer_batch.training.clips import Realism, make_clips
from fer_batch.training.data import IMAGE_SUFFIXES, DatasetError, FaceDataset, load_split
from fer_batch.training.metrics import ClassificationReport, classification_report, flicker_per_100
from fer_batch.temporal import filter_track
from fer_batch.training.train import clip_probabilities, predict_stills

SEQUENCE_CLIPS = 600
SEQUENCE_LENGTH = 12


@dataclass
class EvaluationResult:
    report: ClassificationReport
    out_dir: Path
    checkpoint: Checkpoint
    data: str
    split: str
    errors: list[tuple[str, str]] = field(default_factory=list)
    sequence: dict | None = None
    files: dict[str, Path] = field(default_factory=dict)
    upscale: int | None = None  # --detect --upscale: images enlarged this much before detection
    direct_accuracy: float | None = None  # then: the same faces' own crops, without detection


def resolve_split(data: Path, split: str | None) -> str | None:
    """Which split to score: the one asked for, else `test/` when present, else PATH itself."""
    if split or data.is_file():
        return split or "test"
    if (data / "test").is_dir():
        return "test"
    if any(child.is_dir() and child.name.lower() in EMOTIONS for child in data.iterdir()):
        return None
    candidates = [child for child in data.iterdir() if child.is_dir()]
    if len(candidates) == 1:
        return candidates[0].name
    raise DatasetError(f"{data}: no <emotion>/ folders and no test/ split; pass --split")


def detect_dataset(
    root: Path, checkpoint: Checkpoint, device: torch.device, show_progress: bool, upscale: int | None = None
) -> tuple[FaceDataset, list[tuple[str, str]], np.ndarray | None]:
    """Crops of the largest face of each photo under <emotion>/ folders; errors for photos without one.

    With `upscale`, each image (a face crop, such as FER2013's) is enlarged and padded first, and
    the third value holds the found images' own crops, resized to the model's size, to score
    the same faces without detection."""
    import cv2

    from fer_batch.detection import FaceDetector
    from fer_batch.media import Frame, MediaError, read_image
    from fer_batch.preprocess import align_face, to_grayscale
    from fer_batch.training.calibrate import enlarge_for_detection

    detector = FaceDetector(device=device)
    files: list[tuple[Path, int]] = []
    for folder in sorted(child for child in root.iterdir() if child.is_dir()):
        try:
            label = emotion_index(folder.name, checkpoint.class_names)
        except KeyError as error:
            raise DatasetError(f"{folder}: folder is not an emotion name ({error})") from error
        files += [(path, label) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DatasetError(f"{root}: no images under <emotion>/ folders")
    crops, labels, names, errors, direct = [], [], [], [], []
    size = checkpoint.preprocessing.crop_size
    for path, label in tqdm(files, desc="detect", disable=not show_progress):
        name = str(path.relative_to(root))
        try:
            original = read_image(path)
        except MediaError as error:
            errors.append((name, error.message))
            continue
        rgb = enlarge_for_detection(original, upscale) if upscale else original
        faces = detector.detect([Frame(None, 0, 0.0, rgb)])
        if not len(faces):
            errors.append((name, "no face detected"))
            continue
        largest = int(np.argmax(faces.box_areas()))
        crops.append(align_face(to_grayscale(rgb), faces.landmarks[largest], checkpoint.preprocessing))
        labels.append(label)
        names.append(name)
        if upscale:
            direct.append(cv2.resize(to_grayscale(original), (size, size), interpolation=cv2.INTER_AREA))
    if not crops:
        raise DatasetError(f"{root}: no face found in any of {len(files)} photos")
    dataset = FaceDataset(
        np.stack(crops).reshape(-1, size, size), np.array(labels, np.int64), checkpoint.class_names, root.name, names
    )
    return dataset, errors, (np.stack(direct) if upscale else None)


def temporal_labels(frame_probabilities: np.ndarray, gru_probabilities: np.ndarray, mode: str, stay: float,
                    frame_index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, T) labels of clips in a temporal mode (fer_batch.temporal), or "cnn_gru" for the bare GRU;
    rows laid out as `TrackedClips` (valid prefix at clip frames `frame_index`), -1 on padding."""
    if mode == "none":
        labels = frame_probabilities.argmax(-1)
    elif mode == "cnn_gru":
        labels = gru_probabilities.argmax(-1)
    else:
        labels = np.full(valid.shape, -1, dtype=np.int64)
        for row, (evidence, frames, found) in enumerate(zip(gru_probabilities, frame_index, valid)):
            labels[row, found] = filter_track(evidence[found], frames[found], mode, stay=stay).argmax(-1)
    return np.where(valid, labels, -1)


def change_lag(predicted: np.ndarray, truth: np.ndarray, frame_index: np.ndarray, valid: np.ndarray) -> list[int]:
    """Clip frames from each true change to the first found frame from which the prediction names
    the new label (rows laid out as in `temporal_labels`)."""
    lags = []
    for labels, true, frames, found in zip(predicted, truth, frame_index, valid):
        labels, true, frames = labels[found], true[found], frames[found]
        changes = np.flatnonzero(true[1:] != true[:-1])
        if len(changes):
            cut = int(changes[0]) + 1
            hits = np.flatnonzero(labels[cut:] == true[cut])
            end = frames[cut + hits[0]] if len(hits) else frames[-1] + 1
            lags.append(int(end - frames[cut]))
    return lags


def known_change_labels(frame_probabilities: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, T) labels of a smoother told where each clip's face changes: the CNN's probabilities
    (B, T, C) averaged over each run of found frames with one true label, -1 on padding. No
    real smoother is told that; its accuracy says how much smoothing the CNN's frames could gain."""
    labels = np.full(valid.shape, -1, dtype=np.int64)
    for row, (probabilities, true, found) in enumerate(zip(frame_probabilities, truth, valid)):
        places = np.flatnonzero(found)
        if not len(places):
            continue
        starts = np.flatnonzero(np.r_[True, true[places][1:] != true[places][:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(places)]):
            run = places[start:end]
            labels[row, run] = probabilities[run].mean(axis=0).argmax()
    return labels


TEMPORAL_ROWS = ("none", "cnn_gru", "causal", "bidirectional")


def sequence_metrics(checkpoint: Checkpoint, dataset: FaceDataset, device: torch.device, seed: int = 2024,
                     stay: float = defaults.TEMPORAL_STAY, realism: Realism | None = None) -> dict:
    """Accuracy, flicker and lag on synthetic clips built from `dataset`, per temporal mode:
    none (the CNN alone), cnn_gru (the GRU, unfiltered), causal and bidirectional. With
    `realism`, the clips carry real video's shake, blur, resolution, artefacts and missed
    frames (clips.py); the GRU steps over a missed frame and it is not scored."""
    clips = make_clips(
        dataset, SEQUENCE_CLIPS, SEQUENCE_LENGTH, checkpoint.preprocessing, torch.Generator().manual_seed(seed),
        realism=realism,
    )
    tracked = clips.tracked()
    model = checkpoint.model.to(device)
    frame_probabilities, gru_probabilities = clip_probabilities(model, tracked.frames, checkpoint.preprocessing, device)
    truth, frame_index, valid = tracked.labels.numpy(), tracked.frame_index.numpy(), tracked.valid.numpy()
    steady = ~clips.is_transition.numpy()
    result = {
        "clips": SEQUENCE_CLIPS,
        "frames_per_clip": SEQUENCE_LENGTH,
        "transition_clips": int((~steady).sum()),
        "missed_frame_share": float(1.0 - valid.mean()),
        "true_changes_per_100_frames": flicker_per_100(truth, valid),
        "stay": stay,
    }
    for mode in TEMPORAL_ROWS:
        labels = temporal_labels(frame_probabilities, gru_probabilities, mode, stay, frame_index, valid)
        lags = change_lag(labels[~steady], truth[~steady], frame_index[~steady], valid[~steady])
        result[mode] = {
            "accuracy": float((labels == truth)[valid].mean()),
            "flicker_per_100_frames": flicker_per_100(labels, valid),
            "steady_clip_flicker_per_100_frames": flicker_per_100(labels[steady], valid[steady]),
            "median_lag_frames": float(np.median(lags)) if lags else float("nan"),
        }
    known = known_change_labels(frame_probabilities, truth, valid)
    result["known_changes"] = {"accuracy": float((known == truth)[valid].mean())}
    result["cnn"] = result["none"]  # the name earlier versions wrote
    return result


def evaluate(
    data: Path | str,
    weights: Path | str | None = None,
    split: str | None = None,
    out_dir: Path | str = defaults.EVALUATION_OUT_DIR,
    detect: bool = False,
    sequence: bool = True,
    device: str = defaults.DEVICE,
    limit: int | None = None,
    show_progress: bool = True,
    upscale: int | None = None,
    precision: str = defaults.PRECISION,
) -> EvaluationResult:
    data = Path(data)
    if not data.exists():
        raise DatasetError(f"{data}: dataset path does not exist")
    out_dir = Path(out_dir)
    torch_device = resolve_device(device)
    checkpoint = load_checkpoint(
        Path(weights) if weights else defaults.default_weights_path(), precision=precision, device=torch_device
    )
    model = checkpoint.model.to(torch_device)
    errors: list[tuple[str, str]] = []
    direct: np.ndarray | None = None
    if detect:
        root = data / split if split else data
        dataset, errors, direct = detect_dataset(root, checkpoint, torch_device, show_progress, upscale)
        split_name = split or root.name
    elif upscale:
        raise ValueError("upscale applies to --detect: it enlarges the images before detection")
    else:
        split_name = resolve_split(data, split)
        dataset = load_split(data, split_name, size=checkpoint.preprocessing.crop_size, class_names=checkpoint.class_names)
        split_name = split_name or dataset.split
    if limit is not None and limit < len(dataset):  # a seeded random subset keeps every class
        chosen = np.sort(np.random.default_rng(0).permutation(len(dataset))[:limit])
        dataset = dataset.subset(chosen)
        direct = direct[chosen] if direct is not None else None
    probabilities = predict_stills(model, dataset, checkpoint.preprocessing, torch_device)
    predicted = probabilities.argmax(1)
    report = classification_report(dataset.labels, predicted, checkpoint.class_names)
    result = EvaluationResult(report, out_dir, checkpoint, str(data), split_name, errors)
    if direct is not None:  # the same faces, their own crops: what detection and alignment cost
        own = FaceDataset(direct, dataset.labels, dataset.class_names, dataset.split, dataset.names)
        own_predicted = predict_stills(model, own, checkpoint.preprocessing, torch_device).argmax(1)
        result.direct_accuracy = float((own_predicted == dataset.labels).mean())
        result.upscale = upscale
    if sequence and len(dataset) >= 2 and len(np.unique(dataset.labels)) >= 2:
        result.sequence = sequence_metrics(checkpoint, dataset, torch_device)
        result.sequence["realistic"] = sequence_metrics(checkpoint, dataset, torch_device, realism=Realism())
    _write_artifacts(result, dataset, predicted, probabilities)
    return result


def _write_artifacts(result: EvaluationResult, dataset: FaceDataset, predicted: np.ndarray, probabilities: np.ndarray) -> None:
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    report = result.report
    names = report.class_names
    metrics = {
        "weights": result.checkpoint.name,
        "weights_sha256": result.checkpoint.sha256,
        "data": result.data,
        "split": result.split,
        "tta_flip": result.checkpoint.preprocessing.tta_flip,
        "precision": result.checkpoint.precision,
        **report.to_dict(),
        "detection_errors": len(result.errors),
        "upscale": result.upscale,
        "direct_accuracy_same_faces": result.direct_accuracy,
        "sequence": result.sequence,
    }
    files = result.files
    files["metrics"] = out / "metrics.json"
    files["metrics"].write_text(json.dumps(metrics, indent=2))
    files["confusion_csv"] = out / "confusion_matrix.csv"
    with open(files["confusion_csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, report.confusion):
            writer.writerow([name, *row.tolist()])
    files["per_class_csv"] = out / "per_class.csv"
    with open(files["per_class_csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "precision", "recall", "f1", "support"])
        for index, name in enumerate(names):
            writer.writerow(
                [name, f"{report.precision[index]:.4f}", f"{report.recall[index]:.4f}", f"{report.f1[index]:.4f}",
                 int(report.support[index])]
            )
    files["predictions_csv"] = out / "predictions.csv"
    with open(files["predictions_csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "true", "predicted", "confidence", *[f"prob_{name}" for name in names]])
        for index in range(len(dataset)):
            writer.writerow(
                [dataset.names[index], names[dataset.labels[index]], names[predicted[index]],
                 f"{probabilities[index, predicted[index]]:.4f}", *[f"{p:.4f}" for p in probabilities[index]]]
            )
    files["errors_csv"] = out / "errors.csv"
    with open(files["errors_csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "message"])
        writer.writerows(result.errors)
    files["confusion_png"] = confusion_matrix_png(report, out / "confusion_matrix.png")
    files["per_class_png"] = per_class_bars_png(report, out / "per_class.png")
    confidence = probabilities[np.arange(len(predicted)), predicted]
    files["samples_png"] = sample_grid_png(dataset.images, dataset.labels, predicted, confidence, names, out / "samples.png")
    files["index_html"] = _index_html(result, out / "index.html")


def _index_html(result: EvaluationResult, path: Path) -> Path:
    """One page tying the figures and tables together (figures inlined: it opens offline, alone)."""
    import base64
    import html

    report = result.report

    def figure(name: str, caption: str) -> str:
        data = base64.b64encode(result.files[name].read_bytes()).decode()
        return f"<figure><img src='data:image/png;base64,{data}' alt='{caption}'><figcaption>{caption}</figcaption></figure>"

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{report.precision[i]:.3f}</td><td>{report.recall[i]:.3f}</td>"
        f"<td>{report.f1[i]:.3f}</td><td>{int(report.support[i])}</td></tr>"
        for i, name in enumerate(report.class_names)
    )
    sequence = ""
    if result.sequence:
        names = {"none": "none (CNN alone)", "cnn_gru": "CNN-GRU, unfiltered", "causal": "causal", "bidirectional": "bidirectional"}
        sequence = (
            "<h2>Synthetic clips: the temporal modes</h2><table><tr><th>temporal</th><th>accuracy</th>"
            "<th>flicker / 100 frames</th><th>flicker on steady clips</th><th>median lag (frames)</th></tr>"
            + "".join(
                f"<tr><td>{names[mode]}</td><td>{result.sequence[mode]['accuracy']:.2%}</td>"
                f"<td>{result.sequence[mode]['flicker_per_100_frames']:.1f}</td>"
                f"<td>{result.sequence[mode]['steady_clip_flicker_per_100_frames']:.1f}</td>"
                f"<td>{result.sequence[mode].get('median_lag_frames', float('nan')):.1f}</td></tr>"
                for mode in TEMPORAL_ROWS if mode in result.sequence
            )
            + (f"<tr><td>the CNN averaged between true changes (a reference: a smoother told where the face "
               f"changes)</td><td>{result.sequence['known_changes']['accuracy']:.2%}</td><td></td><td></td><td></td></tr>")
            + f"</table><p>{result.sequence['clips']} clips of {result.sequence['frames_per_clip']} frames; true label changes "
            f"{result.sequence['true_changes_per_100_frames']:.1f} per 100 frames.</p>"
        )
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>fer-batch evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}}
table{{border-collapse:collapse;font-size:14px}}td,th{{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:16px 0}}</style></head><body>
<h1>Evaluation of {html.escape(result.checkpoint.name)}</h1>
<p>data <code>{html.escape(result.data)}</code>, split <code>{html.escape(str(result.split))}</code>,
{int(report.support.sum())} faces{f", {len(result.errors)} photos without a usable face (errors.csv)" if result.errors else ""};
weights sha256 <code>{html.escape(result.checkpoint.sha256 or "")}</code>.</p>
<h2>Accuracy {report.accuracy:.2%} · macro-F1 {report.macro_f1:.4f}</h2>
<table><tr><th>emotion</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
{figure("confusion_png", "Confusion matrix: counts and row-normalised")}
{figure("per_class_png", "Per-class precision, recall and F1")}
{sequence}
{figure("samples_png", "Sample predictions, right (green) and wrong (red)")}
<p>Files: metrics.json, per_class.csv, confusion_matrix.csv, predictions.csv, errors.csv.</p>
</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path


def _print_clip_rows(console: Console, label: str, metrics: dict) -> None:
    for mode in TEMPORAL_ROWS:
        row = metrics[mode]
        console.print(
            f"{label}, temporal {mode}: accuracy {row['accuracy']:.2%}, flicker {row['flicker_per_100_frames']:.1f}/100 frames, "
            f"on steady clips {row['steady_clip_flicker_per_100_frames']:.1f}, median lag {row['median_lag_frames']:.1f} frames"
        )
    console.print(f"{label}, the CNN averaged between true changes (a smoother told where the face changes): "
                  f"accuracy {metrics['known_changes']['accuracy']:.2%}")


def print_evaluation(result: EvaluationResult, console: Console) -> None:
    report = result.report
    table = Table(title=escape(f"{result.checkpoint.name} ({result.checkpoint.precision}) on {result.data} [{result.split}]"))
    for column in ("emotion", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right" if column != "emotion" else "left")
    for index, name in enumerate(report.class_names):
        table.add_row(
            name, f"{report.precision[index]:.3f}", f"{report.recall[index]:.3f}", f"{report.f1[index]:.3f}",
            str(int(report.support[index])),
        )
    console.print(table)
    console.print(
        f"accuracy [bold]{report.accuracy:.2%}[/] on {int(report.support.sum())} faces, macro-F1 {report.macro_f1:.4f}"
    )
    if result.errors:
        console.print(f"[yellow]{len(result.errors)} images had no usable face (listed in errors.csv)[/]")
    if result.direct_accuracy is not None:
        console.print(
            f"through detection (images enlarged {result.upscale}x): {report.accuracy:.2%} on the "
            f"{int(report.support.sum())} faces found; the same faces' own crops: {result.direct_accuracy:.2%} "
            f"({(report.accuracy - result.direct_accuracy) * 100:+.2f} points)"
        )
    if result.sequence:
        _print_clip_rows(console, "clips", result.sequence)
        console.print(f"(true changes {result.sequence['true_changes_per_100_frames']:.1f}/100 frames)")
        if result.sequence.get("realistic"):
            _print_clip_rows(console, "realistic clips", result.sequence["realistic"])
    console.print(f"wrote {', '.join(path.name for path in result.files.values())} to {result.out_dir}")
