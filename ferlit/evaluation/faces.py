"""Faces in new media: detection, five landmarks, alignment to the model's input, tracking.

A model trained on Aff-Wild2's ``cropped_aligned`` frames has only seen faces framed one way, so
faces found in a new video or photo are aligned the same way before they reach it:

* **How the Aff-Wild2 crops were made.** The ABAW organisers (Kollias et al., "Analysing
  Affective Behavior in the First ABAW 2020 Competition", FG 2020, arXiv:2001.11409, and the
  later ABAW papers) ran the RetinaFace detector on every frame for a face box and 5 facial
  landmarks (two eye centres, nose tip, two mouth corners), then cropped and aligned the face
  by those landmarks and resized it to 112 x 112 x 3. They name no template; RetinaFace comes
  from InsightFace, whose 112 x 112 alignment (``insightface/utils/face_align.py``,
  ``norm_crop``) maps the 5 landmarks onto :data:`ARCFACE_TEMPLATE_112` with a least-squares
  similarity transform (scikit-image's ``SimilarityTransform.estimate``, i.e. Umeyama 1991) and
  ``cv2.warpAffine`` with a black border. :func:`align_face` does exactly that, in NumPy.
* **Detector.** RetinaFace's weights ship in no registry package, so detection uses dlib's HOG
  face detector (Dalal & Triggs features + linear SVM, ``dlib.get_frontal_face_detector``), whose
  weights are compiled into dlib, and dlib's 68-point shape predictor (iBUG 300-W mark-up, Kazemi
  & Sullivan 2014), whose file ships in the ``face-recognition-models`` package: nothing is
  downloaded at run time. The five ArcFace points come from the 68: the mean of each eye's six
  contour points (36-41, 42-47) is its centre, point 30 the nose tip, 48 and 54 the mouth
  corners. Measured against dlib's CNN detector and MediaPipe's BlazeFace on "the astronaut
  frames": 22 frames of 640 x 480 built from ``skimage.data.astronaut()`` like those of
  tests/test_faces.py (21 faces 42-76 px wide, alone or beside a mirrored copy, and 7 frames
  without a face), one thread of the project's 2-core Xeon dev machine. HOG with one upsampling
  and this score cut found every face and nothing else, 146 ms a frame with landmarks (IoU
  with the hand-labelled boxes 0.81 on average, 0.71 at worst); the CNN needs 8 s a frame on a
  CPU for the same; BlazeFace's port (18 ms) needs the whole of TensorFlow and fails to import
  under NumPy 2.
* **Tracking.** :class:`Tracker` gives each face a track id that stays with it from frame to
  frame (greedy IoU matching), so that temporal smoothing runs per face and two people's
  expressions never mix.

Coordinates are pixels of the frame as decoded (``x`` right, ``y`` down, origin at the top-left
pixel's corner); boxes are ``(x0, y0, x1, y1)`` floats with ``x1, y1`` exclusive.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ferlit.errors import ConfigError
from ferlit.evaluation.media import Media, MediaFrame, iter_media

#: Where the five alignment points of a face go in a 112 x 112 crop, ``(x, y)`` px, in the order
#: left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner ("left" =
#: the image's left, the subject's right). InsightFace's ``arcface_dst``
#: (``python-package/insightface/utils/face_align.py``), the template of its 112 x 112 crops.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: Size (px) of Aff-Wild2's ``cropped_aligned`` faces, the size :data:`ARCFACE_TEMPLATE_112` is for.
ALIGNED_SIZE = 112

#: The HOG detector's SVM score below which a detection is dropped. dlib's own threshold is 0;
#: on the astronaut frames (module docstring) the real faces scored >= 0.91 and the false
#: detections (the mission patch on the suit, a fold of the helmet) <= 0.21.
DEFAULT_MIN_SCORE = 0.5

#: Upsampling passes before HOG detection: its window is 80 x 80 px, so one pass (each doubles
#: the image) finds faces down to ~40 px; on the astronaut frames no pass missed 12 of 21 faces
#: (those under 80 px), one pass none.
DEFAULT_UPSAMPLE = 1

#: Longest side (px) a frame is scaled down to before detection (landmarks are still found on the
#: full-resolution frame): HOG's time grows with the pixel count, ~134 ms at 640 x 480 with one
#: upsampling on a 2-core machine, so a 1920 x 1080 frame would take ~0.9 s; at 960 px it takes
#: ~0.23 s and still finds faces of ~80 px in a 1080p frame.
DEFAULT_MAX_SIDE = 960

_FACE_MODELS_PACKAGE = "face_recognition_models"
_SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True, eq=False)  # eq=False: == on the landmarks array would be ambiguous
class Face:
    """One detected face.

    ``box``: ``(x0, y0, x1, y1)`` float px in the frame. ``landmarks``: ``(5, 2)`` float64 px,
    ``(x, y)`` of the left eye centre, right eye centre, nose tip, left and right mouth corner
    (the order of :data:`ARCFACE_TEMPLATE_112`). ``score``: the detector's confidence (for HOG
    the SVM margin; larger is surer, :data:`DEFAULT_MIN_SCORE` is the cut).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


def _check_rgb(rgb: np.ndarray, what: str = "rgb") -> np.ndarray:
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or rgb.shape[2] != 3
    ):
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ConfigError(
            f"{what}: expected an H x W x 3 uint8 RGB image, got shape {shape} dtype {dtype}"
        )
    return np.ascontiguousarray(rgb)


def _models_dir() -> str:
    """The folder of dlib model files inside the installed ``face-recognition-models`` package.

    Found without importing the package: its ``__init__`` imports ``pkg_resources``, which
    setuptools 81 and later no longer provide.
    """
    spec = importlib.util.find_spec(_FACE_MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "face detection needs the face-recognition-models package (dlib's landmark model "
            "files): pip install face-recognition-models"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def landmarks_68_to_5(points: np.ndarray) -> np.ndarray:
    """The five ArcFace points ``(5, 2)`` from the 68 iBUG 300-W points ``(68, 2)`` (0-based
    indices): eye centres = means of 36-41 and 42-47, nose tip 30, mouth corners 48 and 54."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ConfigError(f"landmarks: expected 68 (x, y) points, got shape {points.shape}")
    return np.stack(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )


@functools.cache
def _dlib_models():
    """dlib's HOG detector, the 68-point predictor and ``dlib.rectangle``, loaded once per
    process (~1 s) and shared by every :class:`FaceDetector` of the process. dlib's detector
    loads each image into scratch buffers it owns: do not call detectors from several threads at
    once (run them in separate processes)."""
    import dlib  # imported here: the rest of ferlit runs without it

    predictor = dlib.shape_predictor(os.path.join(_models_dir(), _SHAPE_PREDICTOR_68))
    return dlib.get_frontal_face_detector(), predictor, dlib.rectangle


class FaceDetector:
    """dlib's HOG face detector and 68-point landmarks, as the module docstring explains.

    ``upsample``: upsampling passes before detection (0 finds faces of 80 px and more, each pass
    halves that and costs ~4x the time). ``min_score``: detections scoring below are dropped.
    ``max_side``: frames whose longest side is larger are scaled down to it for detection
    (``None``: never). The first detector of a process loads dlib's models (~1 s: the 68-point
    model is 96 MiB); later ones share them.
    """

    def __init__(
        self,
        upsample: int = DEFAULT_UPSAMPLE,
        min_score: float = DEFAULT_MIN_SCORE,
        max_side: int | None = DEFAULT_MAX_SIDE,
    ) -> None:
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 3:
            raise ConfigError(
                f"face detector upsample must be an integer in [0, 3], got {upsample!r}"
            )
        if not (isinstance(min_score, int | float) and math.isfinite(min_score)):
            raise ConfigError(f"face detector min_score must be a finite number, got {min_score!r}")
        if max_side is not None and (
            isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 80
        ):
            raise ConfigError(
                f"face detector max_side must be None or an integer >= 80 (HOG's window is "
                f"80 px), got {max_side!r}"
            )
        self.upsample, self.min_score, self.max_side = upsample, float(min_score), max_side
        self._detector, self._predictor, self._rectangle = _dlib_models()

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        """The faces in ``rgb`` (``H x W x 3`` uint8), left to right (by ``x0``, then ``y0``)."""
        rgb = _check_rgb(rgb)
        height, width = rgb.shape[:2]
        scale = 1.0
        small = rgb
        if self.max_side is not None and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        # the third argument is dlib's adjust_threshold: detections scoring above it come back
        rects, scores, _ = self._detector.run(small, self.upsample, min(self.min_score, 0.0))
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            if score < self.min_score:
                continue
            # dlib rectangles are inclusive pixel indices: right/bottom + 1 is the exclusive edge.
            box = tuple(
                float(v) / scale
                for v in (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            )
            full = self._rectangle(
                round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1
            )
            shape = self._predictor(rgb, full)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=box, landmarks=landmarks_68_to_5(points), score=float(score)))
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


@functools.lru_cache(maxsize=4)
def _detector(upsample: int, min_score: float, max_side: int | None) -> FaceDetector:
    return FaceDetector(upsample, min_score, max_side)


def detect_faces(
    rgb: np.ndarray,
    upsample: int = DEFAULT_UPSAMPLE,
    min_score: float = DEFAULT_MIN_SCORE,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> list[Face]:
    """The faces in ``rgb`` (``H x W x 3`` uint8 RGB), left to right: :class:`FaceDetector`'s
    call, with the detector for these settings loaded once and kept."""
    return _detector(upsample, min_score, max_side)(rgb)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The ``2 x 3`` similarity (rotation, uniform scale, translation) mapping the points ``src``
    ``(N, 2)`` onto ``dst`` ``(N, 2)`` with the least squared error: Umeyama (1991), "Least-squares
    estimation of transformation parameters between two point patterns", eq. 40-42, as
    scikit-image's ``SimilarityTransform.estimate`` computes it (InsightFace aligns with that)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ConfigError(
            f"landmarks: expected matching (N, 2) point arrays, N >= 2, got {src.shape} and {dst.shape}"
        )
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(cov)
    rotation = u @ np.diag(d) @ vt
    variance = (src_c**2).sum() / len(src)
    if variance == 0:
        raise ConfigError("landmarks: all points coincide; no alignment is defined")
    scale = (s * d).sum() / variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The ``size x size x 3`` uint8 face of ``rgb`` aligned on its five ``landmarks`` (``(5, 2)``
    px, :class:`Face`'s order), framed as Aff-Wild2's ``cropped_aligned`` faces are.

    The landmarks go onto :data:`ARCFACE_TEMPLATE_112` scaled by ``size / 112`` with
    :func:`similarity_transform`; the frame is warped bilinearly, black past its edges
    (InsightFace's ``norm_crop``). Any ``size`` gives the framing of a 112 x 112 crop resized to
    ``size``, which is what a model trained on those crops at ``model.input_size`` saw.
    """
    rgb = _check_rgb(rgb)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 1 <= size <= 1024:
        raise ConfigError(f"aligned face size must be an integer in [1, 1024], got {size!r}")
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2) or not np.isfinite(landmarks).all():
        raise ConfigError(
            f"landmarks: expected 5 finite (x, y) points, got shape {landmarks.shape}"
        )
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE_112 * (size / ALIGNED_SIZE))
    return cv2.warpAffine(
        rgb,
        matrix,
        (int(size), int(size)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when either is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker:
    """Track ids for the faces of one video, frame after frame.

    Each call of :meth:`update` takes one frame's faces and returns their track ids, in the same
    order. A face continues the track whose box overlaps it most (IoU >= ``min_iou``), a
    track's overlap being the larger of its last box's and of that box moved on by the track's
    last velocity (box change a frame, times the frames since it was seen): two people crossing
    otherwise swap ids where their boxes meet (faces come left to right, so the tie at the
    crossing went to the wrong track, and each kept the other's from then on), and their
    smoothed expressions mix; the last box stays a candidate so that a still face's jitter
    never counts against it. Pairs are taken greedily from the highest IoU down (ties: lower
    track id, then earlier face),
    each track and face used once; any other face starts a new track, with the next id (1, 2,
    ...). A track not seen for more than ``max_unseen`` consecutive frames ends, so a face that
    comes back later gets a new id. At ~30 fps the default of 10 frames (a third of a second)
    bridges the frames a detector misses while a head turns. Deterministic: the same faces in the
    same order give the same ids. Use one tracker per video.
    """

    def __init__(self, max_unseen: int = 10, min_iou: float = 0.3) -> None:
        if isinstance(max_unseen, bool) or not isinstance(max_unseen, int) or max_unseen < 0:
            raise ConfigError(f"tracker max_unseen must be an integer >= 0, got {max_unseen!r}")
        if not (isinstance(min_iou, int | float) and 0 < min_iou <= 1):
            raise ConfigError(f"tracker min_iou must be a number in (0, 1], got {min_iou!r}")
        self.max_unseen, self.min_iou = max_unseen, float(min_iou)
        self._boxes: dict[int, tuple[float, ...]] = {}  # track id -> last box
        self._unseen: dict[int, int] = {}  # track id -> frames since last seen
        self._velocity: dict[int, np.ndarray] = {}  # track id -> box change a frame
        self._next_id = 1

    def update(self, faces: Sequence[Face | Sequence[float]]) -> list[int]:
        """The track id of each face of this frame (a :class:`Face` or an ``(x0, y0, x1, y1)`` box)."""
        boxes = [tuple(float(v) for v in (f.box if isinstance(f, Face) else f)) for f in faces]
        moved = {
            t: tuple(np.add(last, self._velocity[t] * (self._unseen[t] + 1)).tolist())
            for t, last in self._boxes.items()
        }
        pairs = sorted(
            (-max(box_iou(self._boxes[t], box), box_iou(moved[t], box)), t, i)
            for t in self._boxes
            for i, box in enumerate(boxes)
        )
        ids: list[int | None] = [None] * len(boxes)
        matched: set[int] = set()
        for negative_iou, track, i in pairs:
            if -negative_iou < self.min_iou:
                break
            if track in matched or ids[i] is not None:
                continue
            ids[i] = track
            matched.add(track)
        for track in list(self._boxes):
            if track not in matched:
                self._unseen[track] += 1
                if self._unseen[track] > self.max_unseen:
                    del self._boxes[track], self._unseen[track], self._velocity[track]
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self._next_id
                self._next_id += 1
                self._velocity[ids[i]] = np.zeros(4)
            else:
                gap = self._unseen[ids[i]] + 1
                self._velocity[ids[i]] = np.subtract(box, self._boxes[ids[i]]) / gap
            self._boxes[ids[i]] = box
            self._unseen[ids[i]] = 0
        return [int(t) for t in ids]


@dataclass(frozen=True, eq=False)
class FrameFaces:
    """The faces of one frame, ready for the model.

    ``name``: the media's name (:class:`ferlit.evaluation.media.Media`); ``number``: the frame's
    1-based number in it; ``faces``: the detected faces, left to right; ``track_ids``: the track
    id of each (1, 2, ... within each medium); ``crops``: ``(len(faces), size, size, 3)`` uint8
    RGB aligned faces (:func:`align_face`), empty (``(0, size, size, 3)``) in a frame without a
    face, which still comes, so that such frames can be reported.
    """

    name: str
    number: int
    faces: list[Face]
    track_ids: list[int]
    crops: np.ndarray


def faces_in_media(
    media: str | os.PathLike[str] | Sequence[Media] | Iterable[MediaFrame],
    detector: FaceDetector | None = None,
    size: int = ALIGNED_SIZE,
    max_unseen: int = 10,
    min_iou: float = 0.3,
) -> Iterator[FrameFaces]:
    """Every frame of ``media`` (a path or media as :func:`ferlit.evaluation.media.iter_media`
    takes them, or its frames already decoded) with its faces detected by ``detector`` (default:
    :class:`FaceDetector` with its defaults), tracked with a new :class:`Tracker` (``max_unseen``,
    ``min_iou``) for each medium, and aligned at ``size`` px. Bad settings raise at the call,
    not at the first frame."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1024:
        raise ConfigError(f"aligned face size must be an integer in [1, 1024], got {size!r}")
    Tracker(max_unseen, min_iou)  # checks the tracker's settings now
    detector = FaceDetector() if detector is None else detector
    if isinstance(media, str | os.PathLike) or (
        isinstance(media, Sequence) and all(isinstance(m, Media) for m in media)
    ):
        frames: Iterable[MediaFrame] = iter_media(media)
    else:
        frames = media
    return _faces_in_frames(frames, detector, size, max_unseen, min_iou)


def _faces_in_frames(
    frames: Iterable[MediaFrame],
    detector: FaceDetector,
    size: int,
    max_unseen: int,
    min_iou: float,
) -> Iterator[FrameFaces]:
    tracker, current = None, None
    for name, number, rgb in frames:
        if tracker is None or name != current:
            tracker, current = Tracker(max_unseen, min_iou), name
        faces = detector(rgb)
        ids = tracker.update(faces)
        crops = np.zeros((len(faces), size, size, 3), np.uint8)
        for i, face in enumerate(faces):
            crops[i] = align_face(rgb, face.landmarks, size)
        yield FrameFaces(name, number, faces, ids, crops)
