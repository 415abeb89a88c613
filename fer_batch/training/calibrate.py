"""Measure where MTCNN puts the five landmarks on FER2013 faces.

Annotation crops are warped so that detected landmarks land on these positions, so
a face found in a photo is framed like the faces the network was trained on. Each
48x48 training image is upscaled and padded (MTCNN needs context around a face),
detected, and its landmarks mapped back to 48x48 coordinates; the per-landmark
median is the template written into fer_batch/preprocess.py.

    python -m fer_batch.training.calibrate --data ../shared/fer2013 --count 2000
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from fer_batch.detection import FaceDetector
from fer_batch.media import Frame
from fer_batch.training.data import load_split

UPSCALE = 4
PAD_FRACTION = 0.25
MIN_FACE_SIZE = 60  # the subject's face, not small faces in the padding


def enlarge_for_detection(image: np.ndarray, upscale: int = UPSCALE) -> np.ndarray:
    """A small face crop made into a picture MTCNN can read: enlarged, with a border of replicated
    edge PAD_FRACTION of the enlarged side wide (the detector needs context around a face)."""
    pad = int(max(image.shape[:2]) * upscale * PAD_FRACTION)
    big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def measure_landmarks(images: np.ndarray, detector: FaceDetector, batch: int = 32) -> np.ndarray:
    """(M, 5, 2) landmarks in 48x48 coordinates for the images where one face was found."""
    size = images.shape[1]
    pad = int(size * UPSCALE * PAD_FRACTION)
    found = []
    for start in range(0, len(images), batch):
        frames = []
        for image in images[start : start + batch]:
            big = enlarge_for_detection(image)
            frames.append(Frame(None, len(frames), 0.0, cv2.cvtColor(big, cv2.COLOR_GRAY2RGB)))
        faces = detector.detect(frames, min_face_size=MIN_FACE_SIZE)
        areas = faces.box_areas()
        for index in range(len(frames)):
            rows = np.flatnonzero(faces.frame_index == index)
            if len(rows) == 0:
                continue
            best = rows[np.argmax(areas[rows])]
            if faces.boxes[best, 2] - faces.boxes[best, 0] < size * UPSCALE * 0.5:
                continue  # a small face elsewhere in the image, not the subject
            found.append((faces.landmarks[best] - pad) / UPSCALE)
    return np.stack(found) if found else np.empty((0, 5, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_split(args.data, "train")
    indices = np.random.default_rng(args.seed).permutation(len(dataset))[: args.count]
    detector = FaceDetector(torch.device("cpu"))
    landmarks = measure_landmarks(dataset.images[indices], detector)
    median = np.median(landmarks, axis=0)
    spread = np.median(np.abs(landmarks - median), axis=0)
    print(f"faces found: {len(landmarks)} of {len(indices)}")
    # Mirror-symmetrise: training flips faces, so the template should be left-right symmetric.
    mirrored = median.copy()
    mirrored[[0, 1, 2, 3, 4]] = median[[1, 0, 2, 4, 3]]
    mirrored[:, 0] = dataset.images.shape[2] - mirrored[:, 0]
    symmetric = (median + mirrored) / 2
    print("median landmarks (x, y):", np.round(median, 2).tolist())
    print("median absolute deviation:", np.round(spread, 2).tolist())
    print("symmetric template:", np.round(symmetric, 1).tolist())


if __name__ == "__main__":
    main()
