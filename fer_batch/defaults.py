"""Default values, in one place: the option classes (fer_batch.options), the CLI and training read them here."""

from __future__ import annotations

from pathlib import Path

# Model options
DEVICE = "auto"
# The encoder's arithmetic: auto is int8 on a CPU when the checkpoint carries int8 encoders
# (2.7x the faces/s for 0.2 points of PublicTest accuracy), else fp32 (fer_batch.quantize)
PRECISION = "auto"

# Detection (MTCNN)
THRESHOLD = 0.90  # final-stage (ONet) face probability
# First-stage (P-Net) face probability for a candidate window: MTCNN's own 0.6. Higher sends
# fewer candidates to R-Net and O-Net (0.8: 1.16-1.24x the frames/s of the defaults on the 1080p
# crowd clip, 1.06-1.12x at 640x360, in three `make benchmark` runs) and finds fewer hard faces:
# 512 instead of 531 of 600 PublicTest faces enlarged 3x (docs/throughput.md).
PROPOSAL_THRESHOLD = 0.6
# A video keyframe's detector also reports the faces its O-Net scores from CANDIDATE_THRESHOLD
# (MTCNN's own final threshold, the fer package's) up to --threshold: one that no track follows is
# refined as a tracked face is (two O-Net passes, the shift search) and starts a track if it then
# scores CANDIDATE_CONFIRM (or --threshold, if higher): a face the detector doubted needs more
# evidence than one it found (pipeline.track_faces). O-Net at the detector's one box scores some
# small faces under 0.9 for dozens of frames where refinement gives them 0.95-1.0. On the crowd
# clip's copies (benchmarks/quality_copies.py), confirming at 0.9 started short tracks on a red
# sleeve and a collar, over and over with the detector on every frame (docs/throughput.md).
CANDIDATE_THRESHOLD = 0.7
CANDIDATE_CONFIRM = 0.95
MIN_FACE_SIZE = 20  # pixels of the original frame
DETECT_SCALE = 1.0  # frames are resized by this before detection
MAX_DETECT_SIDE = 4096  # larger frames are shrunk to this longest side for detection (bounded memory)
MAX_IMAGE_PIXELS = 200_000_000  # images declaring more are refused before decoding (decompression bombs)
# Run the detector on every k-th annotated frame of a video, by the kind of device; on the frames
# between, each tracked face is refined by O-Net at its predicted box (pipeline.track_faces). On a
# CPU every 5th: 1.85x the frames/s of every frame on the 1080p crowd clip (1.3x at 640x360) with
# every quality target of `make benchmark` held, given the video encoder (VIDEO_WEIGHTS_NAME),
# whose labels hold when the crops move a little; the photo encoder's do not (93 % "same emotion"
# at 1080p). On a GPU detection is cheap and batched: every frame (docs/throughput.md).
DETECT_EVERY = {"cpu": 5, "gpu": 1}
# Frames of one video per detector call, by the kind of device ("cpu" or "gpu"): a CPU runs P-Net
# one frame at a time anyway, and a window of two 1080p keyframes took 234-245 ms a frame against
# 271-311 for windows of one or four (one thread, nineteenth session; 11,000 page faults a frame
# against 30,000-37,000), 1.01-1.21x the frames/s end to end at 1080p, level at 640x360; a GPU
# waits on the host, and larger batches feed it (1.56x / 1.61x the frames/s at 32 than at 4 on an
# H200, 1080p / 640x360, README "On a GPU").
DETECT_BATCH = {"cpu": 2, "gpu": 32}
# The detector searches for faces smaller than SMALL_FACE_FACTOR x MIN_FACE_SIZE (30 px) only on
# every SMALL_FACES_EVERY-th annotated frame (rounded up to a detector frame), and on a video's
# last: the pyramid levels that find them are three quarters of P-Net's work on a CPU. Faces
# already tracked are refined on every frame whatever their size (pipeline.track_faces), so a
# small face keeps its rows; a new one is found within SMALL_FACES_EVERY frames and followed back
# from there (TRACE_BACK_BYTES). On a CPU every 5th (every 10th, every other keyframe, was 1.2x the
# frames/s and held the benchmark's quality columns, but a woman's track then followed her head as
# she turned away onto a passer-by's face, nineteenth session; with MAX_REFINED_GROWTH it no longer
# does, but over the crowd clip's copies it finds fewer small faces than every 5th and follows the
# 640x360 clip in fewer tracks, twentieth session; docs/throughput.md). On a GPU those
# levels cost little and the schedule cost time (1.36x / 1.52x the frames/s with every frame
# searched at every size, H200): there every detector frame is. The two GPU values were measured
# one at a time, not together (README "On a GPU").
SMALL_FACES_EVERY = {"cpu": 5, "gpu": 1}
SMALL_FACE_FACTOR = 1.5
# Between keyframes a tracked face stays while O-Net's score on its refined box is at least this
# (or --threshold, if lower): a face already followed needs less evidence than a new one, and the
# first refinement after a detection scores lower (0.7 seen) before it settles above 0.97. A track
# with no face on the previous annotated frame needs --threshold to come back by refinement.
REFINE_THRESHOLD = 0.5
# Refinement runs O-Net twice per face, the second time at its own answer; a box scoring under
# this is also tried at the eight shifts of a tenth of its size, the best answer kept
# (fer_batch.detection.FaceDetector.refine): O-Net at one box loses small faces a few pixels off it.
REFINE_SEARCH_BELOW = 0.9

# Tracking
# A new track (a keyframe's face that no track followed) is followed backwards over the frames
# before its keyframe while O-Net scores it at least TRACE_THRESHOLD (or --threshold, if lower),
# over at most TRACE_BACK_BYTES of decoded frames held back for it (1080p: 21 frames).
TRACE_THRESHOLD = 0.5
TRACE_BACK_BYTES = 128 * 2**20
TRACK_IOU = 0.3  # minimum overlap between a predicted track box and a detection
# On a keyframe, a track that had its face on the frame before and that no detection overlaps is
# refined at its predicted box; a refined box overlapping a detection that no track overlaps this
# much is that track's face, moved fast (pipeline.track_faces), not a new track.
CLAIM_IOU = 0.5
# A refined box (between keyframes, on a keyframe that missed the track, or followed back) whose
# size (square root of its area) is more than this times that of the track's last detection is not
# the track's face: O-Net has drifted onto a turned head, hair or a nearer face passing by (a woman
# who turns away in the crowd clip: 1.4x within three frames at scores of 0.6-0.8, then 2.3x on a
# passer-by's face at 1.0). A refined box never sets that size, however high it scores: the drift
# is gradual, 5-15 % a frame at 0.97-0.98 onto a head bowed or covered (twenty-second session).
MAX_REFINED_GROWTH = 1.4
MAX_MISSED = 5  # detection rounds a track survives without a matching face

# Temporal stage (fer_batch.temporal): bidirectional, causal or none; the backward pass of
# bidirectional looks ahead one to two windows of this many video frames; a track's emotion
# is taken to stay from one video frame to the next with probability TEMPORAL_STAY
TEMPORAL = "bidirectional"  # measured best: fer_batch/weights/README.md, "Temporal modes"
TEMPORAL_WINDOW = 16
TEMPORAL_STAY = 0.9

# Sampling and batching
EVERY_NTH = 1
BATCH_SIZE = 64  # crops per classifier batch
DECODE_QUEUE = 16  # decoded frames buffered by the background reader

# Model: the default checkpoints are package data, so a plain `pip install .` carries them. Photos
# are classified by the photo encoder, trained on FER2013's own crops (the more accurate on
# stills and through detection); the faces of videos by the video encoder, trained on crops
# jittered, blurred and shrunk as a tracker's are (the more accurate on such frames, and steady
# when keyframes move the crops). The model card (weights/README.md) measures both.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS_NAME = "fer-cnn-gru.pt"
VIDEO_WEIGHTS_NAME = "fer-cnn-gru-video.pt"

# Media
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Photo and video formats people have but the decoders here do not read: found in a folder,
# they are listed as skipped with the reason instead of passing unseen.
UNSUPPORTED_MEDIA_SUFFIXES = (
    ".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raw", ".psd",
    ".3gp", ".wmv", ".flv", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".vob",
)
OUTPUT_SUFFIXES = (".parquet", ".csv")

# The Ray engine (fer_batch.ray): videos are cut into segments of about this many seconds,
# annotated in parallel and stitched; each reads a few frames before its cut (see overlap_frames)
SEGMENT_S = 60.0
ENGINES = ("local", "ray")
ENGINE = "local"  # this process; "ray": a Ray cluster

# `fer train` (fer_batch.training.train.TrainConfig) and `fer evaluate`: the recipe of the stage-1
# networks (the model card's "Recipe"); the shipped ones changed some of these on the command line
# (the model card's "How it was trained")
TRAIN_OUT_DIR = "runs/train"
TRAIN_MODEL = "base"  # fer_batch.model.MODEL_PRESETS
TRAIN_EPOCHS = 26  # CNN epochs on augmented stills
TRAIN_TEMPORAL_EPOCHS = 3  # GRU epochs on synthetic clips
TRAIN_BATCH_SIZE = 128
TRAIN_LEARNING_RATE = 3e-3  # one-cycle's peak; a plateau schedule's starting rate
TRAIN_OPTIMIZER = "adamw"
TRAIN_SCHEDULE = "onecycle"
TRAIN_HOLDOUT = 0.0  # share of the training images held out and scored every CNN epoch
TRAIN_PLATEAU_PATIENCE = 5
TRAIN_PLATEAU_FACTOR = 0.75
TRAIN_SEED = 0
TRAIN_PRECISION = "auto"  # fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32
TRAIN_EVAL_EVERY = 1  # PublicTest every N CNN epochs
TRAIN_CLIPS_PER_EPOCH = 3000
TRAIN_MIXUP_ALPHA = 0.0
TRAIN_REALISTIC_STILLS = 0.0
TRAIN_TTA_FLIP = True  # flip averaging at evaluation, stored in the checkpoint for annotate
TRAIN_DISTILL_WEIGHT = 0.5
TRAIN_DISTILL_TEMPERATURE = 2.0
EVALUATION_OUT_DIR = Path("results/evaluation")

# `fer serve`: local by default; uploads are bounded in size, type and number waiting
SERVE_HOST = "127.0.0.1"
SERVE_PORT = 8000
SERVE_WORK_DIR = Path("fer-serve")
SERVE_MAX_UPLOAD_MB = 500  # one request's body, all its files together
SERVE_MAX_WAITING = 20  # jobs queued or running; more are refused (503) until some finish
SERVE_TABLE_ROWS = 500  # face rows a job's page shows; the downloads have all of them


def device_kind(device: "str | object") -> str:
    """"cpu" or "gpu": the key of the device-dependent defaults above, for a torch device or its name."""
    return "cpu" if str(getattr(device, "type", device)).split(":")[0] == "cpu" else "gpu"


def default_weights_path() -> Path:
    return WEIGHTS_DIR / DEFAULT_WEIGHTS_NAME


def default_video_weights_path() -> Path:
    return WEIGHTS_DIR / VIDEO_WEIGHTS_NAME


def weights_by_media_type(weights: "str | Path | None", video_weights: "str | Path | None") -> dict[str, Path]:
    """Which checkpoint classifies the faces of each media type ("image", "video"). Photos:
    `weights`, else the shipped photo encoder. Videos: `video_weights`, else `weights` when that
    is given (one file of the user's own for everything), else the shipped video encoder."""
    photo = Path(weights) if weights else default_weights_path()
    if video_weights:
        video = Path(video_weights)
    else:
        video = photo if weights else default_video_weights_path()
    return {"image": photo, "video": video}
