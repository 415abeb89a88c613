"""The emotion list: the single source of truth for class names and their order.

The order is FER2013's own code order (0=angry ... 6=neutral), so the original
challenge CSV maps to class indices without a lookup table. Checkpoints store the
names they were trained with; inference reads them from the checkpoint.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# FER2013 CSV `emotion` codes are indices into EMOTIONS.
FER2013_CODE_TO_EMOTION: dict[int, str] = dict(enumerate(EMOTIONS))

# The Usage column values of fer2013.csv and the split names used everywhere else.
CSV_USAGE_TO_SPLIT: dict[str, str] = {
    "Training": "train",
    "PublicTest": "test",
    "PrivateTest": "private",
}


def emotion_index(name: str, class_names: tuple[str, ...] = EMOTIONS) -> int:
    """Index of an emotion name (case-insensitive), as used for folder datasets."""
    lowered = name.strip().lower()
    for index, candidate in enumerate(class_names):
        if candidate == lowered:
            return index
    raise KeyError(f"unknown emotion {name!r}; expected one of {', '.join(class_names)}")

# Fixed colour per emotion (RGB hex), shared by rendered videos, report plots and bars.
EMOTION_COLORS: dict[str, str] = {
    "angry": "#d62728",
    "disgust": "#6b8e23",
    "fear": "#9467bd",
    "happy": "#f2b701",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#7f7f7f",
}


def emotion_color(name: str) -> str:
    return EMOTION_COLORS.get(name, "#444444")
