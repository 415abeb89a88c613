"""Face detection with facenet-pytorch's MTCNN, using the weights inside its wheel.

Frames of one video have one size, so they are detected as a batch (one pyramid pass
over many frames, which is what makes the GPU path fast). `detect_scale` shrinks
frames before detection to trade small faces for speed; boxes and landmarks are
always returned in original-frame pixels, as a `Faces` batch.

`refine` runs only MTCNN's last stage (O-Net) on boxes a tracker predicts: between
detector keyframes every live track gets a real box, landmarks and score for the cost
of one 48x48 crop per face, instead of a carried guess.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from fer_batch import defaults
from fer_batch.faces import Faces
from fer_batch.media import Frame
from fer_batch.mtcnn import AreaSampler, crop_box, detect_batch, for_cpu, normalise_pixels, place_landmarks, run_in_chunks
from fer_batch.runtime import bucket_size


class BucketedBatches(torch.nn.Module):
    """Runs a network on chunks of at most `chunk` inputs, each padded to a power of two.

    oneDNN caches compiled kernels per input shape (up to 1,024 of them), and R-Net and
    O-Net see a different number of candidate faces in every frame: unpadded, each new
    count adds cache entries, and a long video grows the process. With powers of two
    there are at most a few shapes per network, for at most twice the work of these two
    small networks (P-Net, the costly one, is untouched). The classifier pads the same way.

    On a CPU, chunks stay small (`CPU_CHUNKS`): a big batch's activations (O-Net's first layer
    holds 0.27 MB a face) come fresh from the operating system on every call and are faulted
    in page by page, which made O-Net 1.7-2.5x slower per face at 128-512 faces than at 16-64
    (with glibc's mmap and trim thresholds raised, every size ran at the small chunks' speed in
    the main thread, but the pipeline's detection threads gained nothing from that).

    On a CPU, batches are padded from 1 (`smallest`), not 8: refinement (`FaceDetector.refine`)
    calls O-Net on one to a few faces at a time, and one face padded to eight cost 8x (one
    thread: 4.9 ms a call against 0.61 ms alone); and with `split_padding` a count that padding
    would inflate by more than a quarter runs as two calls where that runs fewer rows (9 as 8 + 1,
    not 16). A GPU takes fewer, larger calls: chunks of `GPU_CHUNK`, each padded whole. The
    answers are the same; the powers of two under 8 add three shapes per network to oneDNN's cache.
    """

    def __init__(self, network: torch.nn.Module, chunk: int | None = None, smallest: int = 8,
                 split_padding: bool = False) -> None:
        super().__init__()
        self.network = network
        self.chunk = chunk  # None: any count in one call
        self.smallest = smallest
        self.split_padding = split_padding

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = inputs.shape[0]
        if self.chunk is not None and count > self.chunk:
            return run_in_chunks(self, inputs, self.chunk)
        size = bucket_size(count, self.smallest)
        half = size // 2
        if (self.split_padding and size > self.smallest and size - count > size // 4
                and half + bucket_size(count - half, self.smallest) < size):  # e.g. 9 as 8 + 1, not 16
            return run_in_chunks(self, inputs, half)  # two calls: count < 2 x half
        if size != count:
            padding = inputs.new_zeros((size - count, *inputs.shape[1:]))
            inputs = torch.cat([inputs, padding])
        outputs = self.network(inputs.contiguous(memory_format=torch.channels_last))
        return tuple(output[:count] for output in outputs)


# R-Net and O-Net inputs per call on a CPU (BucketedBatches). Measured on the 2-core AVX-512
# machine, one thread: R-Net 56 us a face in chunks of 32, 100-110 at 48-512; O-Net 350-365 us
# at 16, the same or 630 at 32 by what the process allocated before, 600-880 at 128-512. Two
# threads detecting 1080p crowd frames side by side: 147-160 ms a frame each with these chunks,
# 170-240 with chunks of 512.
CPU_CHUNKS = {"rnet": 32, "onet": 16}
GPU_CHUNK = 512  # R-Net and O-Net inputs per call at most on a GPU (a call's memory bounded)


def load_mtcnn_networks(device: torch.device) -> "object":
    """facenet-pytorch's MTCNN with its shipped P/R/O-Net weights (never downloads)."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as error:  # pragma: no cover - exercised only on a broken install
        raise ImportError(
            "facenet-pytorch is not installed; install it without its old pins: "
            "pip install --no-deps facenet-pytorch==2.6.0"
        ) from error
    return MTCNN(keep_all=True, device=device)


# Where `FaceDetector.refine` looks again for a face O-Net scores low: the eight neighbours of
# its box at a tenth of the box's width and height (dx, dy).
_SEARCH_SHIFTS = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy], np.float64)


class FaceDetector:
    """Batched MTCNN detection of RGB uint8 frames; loaded once, used with any run's options.

    facenet-pytorch supplies the networks and their weights; the stages run in
    `fer_batch.mtcnn`, which crops each stage's candidates in one call.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._mtcnn = load_mtcnn_networks(self.device)
        # channels-last: P-Net 1.8x, R-Net 1.8x and O-Net 2.6x on a CPU, mostly in their max-pools
        pnet, rnet, onet = (network.to(memory_format=torch.channels_last).eval()
                            for network in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet))
        chunks, smallest, split_padding = {"rnet": GPU_CHUNK, "onet": GPU_CHUNK}, 8, False
        if self.device.type == "cpu":  # copies: facenet-pytorch's own networks stay as they ship (tests compare)
            pnet, rnet, onet = (for_cpu(network) for network in (pnet, rnet, onet))
            chunks, smallest, split_padding = CPU_CHUNKS, 1, True
        # R-Net and O-Net batch their own inputs (fer_batch.mtcnn.detect_batch hands them whole stages)
        self._pnet = pnet
        self._rnet = BucketedBatches(rnet, chunks["rnet"], smallest, split_padding).eval()
        self._onet = BucketedBatches(onet, chunks["onet"], smallest, split_padding).eval()
        # Refinement crops its few boxes one by one on a CPU (a summed-area table of the whole
        # frame costs more there) and all at once through a table on a GPU, where each box's
        # own crop was a host round trip and a few kernel launches (the same crops either way).
        self.batched_crops = self.device.type != "cpu"

    def detect(
        self,
        frames: list[Frame],
        source: str = "",
        media_type: str = "image",
        *,
        threshold: float = defaults.THRESHOLD,
        min_face_size: int = defaults.MIN_FACE_SIZE,
        detect_scale: float = defaults.DETECT_SCALE,
        proposal_threshold: float = defaults.PROPOSAL_THRESHOLD,
    ) -> Faces:
        """The faces of all `frames` (which must share a size, as frames of one video do), frame by frame,
        each frame's faces ordered left to right."""
        faces = Faces.empty(source, media_type)
        if not frames:
            return faces
        height, width = frames[0].rgb.shape[:2]
        # Very large frames (a 12000x8000 photo) are detected at a bounded working size.
        detect_scale = min(detect_scale, defaults.MAX_DETECT_SIDE / max(height, width))
        if min(height, width) * detect_scale < 12:  # smaller than MTCNN's smallest window: no face fits
            return faces
        if detect_scale != 1.0:
            interpolation = cv2.INTER_AREA if detect_scale < 1 else cv2.INTER_LINEAR
            inputs = [
                cv2.resize(frame.rgb, None, fx=detect_scale, fy=detect_scale, interpolation=interpolation)
                for frame in frames
            ]
        else:
            inputs = [frame.rgb for frame in frames]
        batch = np.ascontiguousarray(np.stack(inputs))
        thresholds = [proposal_threshold, self._mtcnn.thresholds[1], threshold]
        # MTCNN's pyramid starts at 12 px; below that it would upsample, which only costs time.
        pyramid_min_size = max(12.0, min_face_size * detect_scale)
        batch_boxes, batch_points = self._run_mtcnn(batch, pyramid_min_size, thresholds)
        parts = []
        for frame, boxes, points in zip(frames, batch_boxes, batch_points):
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
            points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
            corners = boxes[:, :4] / detect_scale
            widths, heights = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
            keep = ~((widths < min_face_size) & (heights < min_face_size)) & (widths > 0) & (heights > 0)
            corners, scores, points = corners[keep], boxes[keep, 4], points[keep] / detect_scale
            order = np.lexsort((corners[:, 1], corners[:, 0]))  # left to right, then top to bottom
            height, width = frame.rgb.shape[:2]
            parts.append(
                Faces.of_frame(
                    source, media_type, frame.index, frame.timestamp_s, (width, height),
                    corners[order], points[order], scores[order], detected=True,
                )
            )
        return Faces.concat(parts)

    def _run_mtcnn(self, batch: np.ndarray, min_size: float, thresholds: list[float]) -> tuple[list, list]:
        """MTCNN's three stages on a batch of frames (fer_batch.mtcnn): per frame, boxes with
        scores and landmarks."""
        return detect_batch(batch, min_size, self._pnet, self._rnet, self._onet, thresholds, self._mtcnn.factor,
                            self.device)

    def refine(self, frame: Frame, boxes: np.ndarray, source: str = "", media_type: str = "video",
               search_below: float = defaults.REFINE_SEARCH_BELOW) -> Faces:
        """O-Net on (N, 4) boxes of one frame, in original pixels: the same N faces with refined
        boxes, landmarks and O-Net's score (`detected` False: no full detection ran).

        Each box is made square around its centre, as R-Net's proposals are, cropped and
        resized to 48x48 exactly as detection's third stage crops its candidates
        (fer_batch.mtcnn.crop_box), then corrected by O-Net's box regression; its landmarks
        are placed as facenet-pytorch places them. Then O-Net runs once more, on its own
        answers (detection's O-Net, too, sees a corrected box, R-Net's, not the first guess),
        and on the eight shifts of a tenth of its size around each box that scored under
        `search_below`: O-Net's score falls fast when a small face sits a little off its box
        (a 26-px face of the crowd clip: 0.03-0.7 where detection, with many proposals, gives
        0.9-0.98). Each face keeps its best-scoring answer.
        """
        height, width = frame.rgb.shape[:2]
        if len(boxes) == 0:
            return Faces.of_frame(source, media_type, frame.index, frame.timestamp_s, (width, height),
                                  np.empty((0, 4)), np.empty((0, 5, 2)), np.empty(0), detected=False)
        pixels = torch.from_numpy(frame.rgb).to(self.device)
        boxes = np.asarray(boxes, np.float64)
        sampler = AreaSampler(pixels[None]) if self.batched_crops else None  # one table for both O-Net calls
        refined, landmarks, scores = self._onet_at(pixels, boxes, sampler)
        # One more O-Net call: each answer refined again (as detection's O-Net sees R-Net's
        # corrected box, not the first guess), and each weak box's eight shifts.
        weak = np.flatnonzero(scores < search_below)
        sizes = np.stack([boxes[weak, 2] - boxes[weak, 0], boxes[weak, 3] - boxes[weak, 1]], axis=1) / 10
        shifted = (boxes[weak, None, :] + np.tile(_SEARCH_SHIFTS[None] * sizes[:, None], (1, 1, 2))).reshape(-1, 4)
        more_boxes, more_landmarks, more_scores = self._onet_at(pixels, np.concatenate([refined, shifted]), sampler)
        count = len(boxes)
        # Per face, its candidates' rows in `more_*`: its own second pass, then its shifts if weak.
        candidates = np.full((count, 1 + len(_SEARCH_SHIFTS)), -1)
        candidates[:, 0] = np.arange(count)
        candidates[weak, 1:] = count + np.arange(len(shifted)).reshape(len(weak), len(_SEARCH_SHIFTS))
        candidate_scores = np.where(candidates >= 0, more_scores[candidates], -1.0)
        best = candidates[np.arange(count), candidate_scores.argmax(axis=1)]
        better = more_scores[best] > scores
        refined[better], landmarks[better], scores[better] = more_boxes[best[better]], more_landmarks[best[better]], more_scores[best[better]]
        return Faces.of_frame(source, media_type, frame.index, frame.timestamp_s, (width, height),
                              refined, landmarks, scores, detected=False)

    def _onet_at(self, pixels: torch.Tensor, boxes: np.ndarray, sampler: AreaSampler | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net's corrected boxes (N, 4), landmarks (N, 5, 2) and scores (N,) at (N, 4) boxes of
        uint8 (H, W, 3) `pixels` (a box with no pixel in the frame scores 0), cropped through
        `sampler` (a table of `pixels`) where there is one."""
        from facenet_pytorch.models.utils.detect_face import bbreg, rerec

        squares = rerec(torch.tensor(boxes, dtype=torch.float64))
        crops, valid = self._crops_at(pixels, squares, sampler)
        with torch.no_grad():
            regression, points, probabilities = self._onet(normalise_pixels(crops))
        regression, points = regression.cpu().double(), points.cpu().double()
        scores = np.where(valid, probabilities[:, 1].cpu().numpy(), 0.0)
        landmarks = place_landmarks(squares, points)
        refined = bbreg(squares.clone(), regression)
        return refined[:, :4].numpy(), landmarks.numpy(), scores

    @staticmethod
    def _crops_at(pixels: torch.Tensor, squares: torch.Tensor, sampler: AreaSampler | None
                  ) -> tuple[torch.Tensor, np.ndarray]:
        """(N, 3, 48, 48) O-Net crops of uint8 (H, W, 3) `pixels` at (N, 4) squares, all in one
        lookup through `sampler` or else one by one, and which squares had a pixel inside the
        frame (the others' crops are mid-grey)."""
        if sampler is not None:
            crops, outside = sampler.crops(squares.to(pixels.device), torch.zeros(len(squares), dtype=torch.long,
                                                                                 device=pixels.device), 48)
            return crops, ~outside.cpu().numpy()
        crops = torch.full((len(squares), 3, 48, 48), 127.5, device=pixels.device)
        valid = np.zeros(len(squares), bool)
        for row, square in enumerate(squares):
            crop = crop_box(pixels, square, 48)
            if crop is not None:
                crops[row], valid[row] = crop, True
        return crops, valid
