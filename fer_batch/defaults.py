"""Default options, in one place: the library's config dataclasses and the CLI both read these."""

from __future__ import annotations

from pathlib import Path

# Detection (MTCNN)
DETECTION_THRESHOLD = 0.90  # final-stage (ONet) face probability
MIN_FACE_SIZE = 20  # pixels of the original frame
DETECTION_SCALE = 1.0  # frames are resized by this before detection
DETECT_EVERY = 1  # run the detector on every k-th annotated frame, track in between

# Tracking
TRACK_IOU_THRESHOLD = 0.3  # minimum overlap between a predicted track box and a detection
TRACK_MAX_MISSED = 5  # detection rounds a track survives without a matching face

# Sampling and batching
EVERY_NTH_FRAME = 1
BATCH_SIZE = 64  # crops per classifier batch
DETECTION_BATCH = 4  # frames of one video per detector call
DECODE_QUEUE = 16  # decoded frames buffered by the background reader

# Model
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS_NAME = "fer-cnn-gru.pt"

# Media
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
OUTPUT_SUFFIXES = (".parquet", ".csv")


def default_weights_path() -> Path:
    return WEIGHTS_DIR / DEFAULT_WEIGHTS_NAME
