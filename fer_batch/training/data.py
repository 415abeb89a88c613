"""FER2013 in either form (challenge CSV or image folders), decoded once into a cache.

Reading 30k small PNGs takes a minute; the decoded arrays are cached in an .npz file
keyed by the dataset's path, size and modification times, so later runs start at once.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_batch.labels import CSV_USAGE_TO_SPLIT, EMOTIONS, emotion_index

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


@dataclass
class FaceDataset:
    """Pre-cropped faces of one split: uint8 images (N, 48, 48) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    split: str
    names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))

    def subset(self, indices: np.ndarray) -> "FaceDataset":
        return FaceDataset(
            self.images[indices], self.labels[indices], self.class_names, self.split, [self.names[i] for i in indices]
        )


class DatasetError(ValueError):
    """A dataset path that cannot be read as FER2013; the message names the path."""


def default_cache_dir() -> Path:
    root = os.environ.get("FER_BATCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fer-batch"
    )
    return Path(root)


def _fingerprint(paths: list[Path], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _folder_split_root(root: Path, split: str | None) -> Path:
    """The folder whose children are <emotion>/ folders for the wanted split."""
    if split:
        candidate = root / split
        if candidate.is_dir():
            return candidate
        if _has_emotion_folders(root) and split in {"all", root.name}:
            return root
        raise DatasetError(f"{root}: no '{split}' split folder (expected {root / split}/<emotion>/)")
    if _has_emotion_folders(root):
        return root
    raise DatasetError(f"{root}: expected <emotion>/ subfolders ({', '.join(EMOTIONS)}) or a split name")


def _has_emotion_folders(folder: Path) -> bool:
    names = {child.name.lower() for child in folder.iterdir() if child.is_dir()}
    return bool(names & set(EMOTIONS))


def _read_gray(path: Path, size: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"{path}: cannot decode image")
    if image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def _load_folder(split_root: Path, split: str, size: int, class_names: tuple[str, ...]) -> FaceDataset:
    files: list[tuple[Path, int]] = []
    for emotion_dir in sorted(child for child in split_root.iterdir() if child.is_dir()):
        try:
            label = emotion_index(emotion_dir.name, class_names)
        except KeyError as error:
            raise DatasetError(f"{emotion_dir}: folder is not an emotion name ({error})") from error
        for file in sorted(emotion_dir.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                files.append((file, label))
    if not files:
        raise DatasetError(f"{split_root}: no images under <emotion>/ folders")
    images = np.stack([_read_gray(path, size) for path, _ in files])
    labels = np.array([label for _, label in files], dtype=np.int64)
    names = [str(path.relative_to(split_root)) for path, _ in files]
    return FaceDataset(images, labels, class_names, split, names)


def _load_csv(csv_path: Path, split: str, size: int, class_names: tuple[str, ...]) -> FaceDataset:
    wanted_usage = {usage for usage, name in CSV_USAGE_TO_SPLIT.items() if name == split or usage == split}
    if split == "all":
        wanted_usage = set(CSV_USAGE_TO_SPLIT)
    if not wanted_usage:
        raise DatasetError(f"{csv_path}: unknown split '{split}' (use train, test, private or all)")
    images, labels, names = [], [], []
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        required = {"emotion", "pixels"}
        if reader.fieldnames is None or not required <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path}: expected columns emotion,pixels[,Usage], got {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):
            usage = row.get("Usage") or "Training"
            if usage not in wanted_usage:
                continue
            pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            side = int(round(np.sqrt(pixels.size)))
            if side * side != pixels.size:
                raise DatasetError(f"{csv_path}:{row_number}: {pixels.size} pixels is not a square image")
            image = pixels.reshape(side, side)
            if side != size:
                image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            code = int(row["emotion"])
            if not 0 <= code < len(EMOTIONS):
                raise DatasetError(f"{csv_path}:{row_number}: emotion code {code} outside 0..6")
            images.append(image)
            labels.append(emotion_index(EMOTIONS[code], class_names))
            names.append(f"{usage}_{row_number}")
    if not images:
        raise DatasetError(f"{csv_path}: no rows with Usage in {sorted(wanted_usage)}")
    return FaceDataset(np.stack(images), np.array(labels, dtype=np.int64), class_names, split, names)


def load_split(
    data: Path | str,
    split: str | None,
    *,
    size: int = 48,
    class_names: tuple[str, ...] = EMOTIONS,
    cache_dir: Path | None = None,
) -> FaceDataset:
    """One split of FER2013 from a CSV file or an image-folder root, through the cache.

    For folders, `split` names a subfolder (train, test, val); None means PATH itself
    holds the <emotion>/ folders. For the CSV, split is train, test (PublicTest),
    private (PrivateTest) or all.
    """
    data = Path(data)
    if not data.exists():
        raise DatasetError(f"{data}: dataset path does not exist")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DatasetError(f"{data}: a dataset file must be the FER2013 .csv")
        split = split or "all"
        source_files = [data]
    else:
        split_root = _folder_split_root(data, split)
        split = split or split_root.name
        source_files = sorted(p for p in split_root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    cache_dir = cache_dir or default_cache_dir()
    key = _fingerprint(source_files, f"{data.resolve()}|{split}|{size}|{','.join(class_names)}")
    cache_file = cache_dir / f"{data.name}-{split}-{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            return FaceDataset(
                cached["images"], cached["labels"], class_names, split, [str(name) for name in cached["names"]]
            )
    if data.is_file():
        dataset = _load_csv(data, split, size, class_names)
    else:
        dataset = _load_folder(split_root, split, size, class_names)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(cache_file.name + ".tmp.npz")
        np.savez(temporary, images=dataset.images, labels=dataset.labels, names=np.array(dataset.names))
        temporary.replace(cache_file)
    except OSError:
        pass  # a read-only cache only costs speed
    return dataset
