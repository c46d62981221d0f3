"""Avatars: everything that depends only on the face video, computed once (``iplap prepare``).

An avatar holds the face track of every 25 fps frame (478 landmarks, crop box), the
reference choice, the N references' features (h1, h2, crops), the Nl reference landmark
sets, and the face file itself, so that a later run needs only the avatar and the speech.

On disk it is one zip file (stored, not compressed, so it opens fast)::

    avatar.json          format, version, the bundle's identity, options, sha256 of every member
    arrays/NAME.npy      the arrays above
    source/FILENAME      the face image or video, byte for byte

Loading checks the format, every member's sha256, and that the avatar was made with the
same bundle; a stale or foreign file is a clear error.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AvatarError
from .landmarks import N_POSE, normalise_to_box
from .files import check_input_file, create_temp_file, move_into_place
from .media import FrameTimeline
from .renderer import References

log = logging.getLogger(__name__)

AVATAR_FORMAT = "iplap-avatar"
AVATAR_VERSION = 2  # 2: frames without a face (missing, passthrough)


@dataclass
class FaceTrack:
    """The face in every 25 fps frame of the face video."""

    landmarks: np.ndarray  # (F, 478, 3) float32, normalised to the frame
    boxes: np.ndarray  # (F, 4) int32 crop boxes y1, y2, x1, x2
    height: int
    width: int
    #: (F,) bool: frames where no face was found; their landmarks and box are the nearest
    #: face's, so the landmark windows around them stay whole.
    missing: np.ndarray | None = None
    #: (F,) bool: frames the render leaves as they are (no face pasted).
    passthrough: np.ndarray | None = None

    def __post_init__(self):
        count = len(self.landmarks)
        if self.missing is None:
            self.missing = np.zeros(count, bool)
        if self.passthrough is None:
            self.passthrough = np.zeros(count, bool)

    def __len__(self) -> int:
        return len(self.landmarks)

    def crop_hw(self, k: int) -> tuple[int, int]:
        y1, y2, x1, x2 = self.boxes[k]
        return int(y2 - y1), int(x2 - x1)

    def normalised(self, k: int) -> np.ndarray:
        """The (2, 131) landmarks of frame k, normalised to its crop box (the models' input)."""
        return normalise_to_box(self.landmarks[k], self.height, self.width, tuple(int(v) for v in self.boxes[k]))

    def pose(self, k: int) -> np.ndarray:
        return self.normalised(k)[:, :N_POSE]


@dataclass
class Avatar:
    """A prepared face: track, references and their features, and the face file."""

    track: FaceTrack
    timeline: FrameTimeline
    ref_frames: np.ndarray  # (N,) frame of each reference image, in the original's order
    landmark_ref_frames: np.ndarray  # (Nl,) frame of each reference landmark set
    references: References
    source_name: str
    source_bytes_sha256: str
    bundle_id: str
    options: dict = field(default_factory=dict)
    source_path: Path | None = None  # the face file on disk
    _zip_path: Path | None = None  # or inside this avatar file

    @property
    def n_frames(self) -> int:
        return len(self.track)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames it renders: the face photo's or video's own."""
        return int(self.track.width), int(self.track.height)

    @property
    def is_image(self) -> bool:
        return bool(self.options.get("is_image"))

    def open_source(self):
        """A fresh binary file object of the face file."""
        if self.source_path is not None:
            return open(self.source_path, "rb")
        if self._zip_path is not None:
            archive = zipfile.ZipFile(self._zip_path)
            return _OwnedMember(archive, archive.open(f"source/{self.source_name}"))
        raise AvatarError("this avatar has no face file")

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the avatar file (atomically: a temporary file renamed into place)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise AvatarError(f"output folder does not exist: {path.parent}")
        arrays = {
            "landmarks": self.track.landmarks.astype(np.float32), "boxes": self.track.boxes.astype(np.int32),
            "missing": self.track.missing.astype(bool), "passthrough": self.track.passthrough.astype(bool),
            "frame_of": np.asarray(self.timeline.frame_of, np.int64),
            "source_pts": np.asarray(self.timeline.source_pts, np.int64),
            "source_times": np.asarray(self.timeline.source_times, np.float64),
            "ref_frames": self.ref_frames.astype(np.int64),
            "landmark_ref_frames": self.landmark_ref_frames.astype(np.int64),
            "ref_index": self.references.index.astype(np.int64),
            "ref_h1": self.references.h1, "ref_h2": self.references.h2, "ref_images": self.references.images,
        }
        try:
            tmp = create_temp_file(path.parent, f".{path.name}.")
        except OSError as exc:
            raise AvatarError(f"cannot write into {path.parent}: {exc.strerror}") from None
        try:
            members = {}
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, value in arrays.items():
                    buffer = io.BytesIO()
                    np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
                    members[f"arrays/{name}.npy"] = _write(archive, f"arrays/{name}.npy", buffer.getvalue())
                with self.open_source() as source:
                    members[f"source/{self.source_name}"] = _copy(archive, f"source/{self.source_name}", source)
                meta = {
                    "format": AVATAR_FORMAT, "format_version": AVATAR_VERSION, "bundle_id": self.bundle_id,
                    "source_name": self.source_name, "source_sha256": self.source_bytes_sha256,
                    "height": self.track.height, "width": self.track.width, "frames": self.n_frames,
                    "options": self.options, "members": members,
                }
                archive.writestr("avatar.json", json.dumps(meta, indent=2))
            move_into_place(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, bundle_id: str | None = None) -> "Avatar":
        """Read and verify an avatar file; ``bundle_id`` must match when given."""
        path = Path(path)
        check_input_file(path, "avatar", error=AvatarError)
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise AvatarError(f"{path} is not an iplap avatar file (make one with `iplap prepare`)") from None
        with archive:
            try:
                meta = json.loads(archive.read("avatar.json"))
            except (KeyError, json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, OSError):
                raise AvatarError(f"{path} is not an iplap avatar file (make one with `iplap prepare`)") from None
            if meta.get("format") != AVATAR_FORMAT:
                raise AvatarError(f"{path} is not an iplap avatar file (make one with `iplap prepare`)")
            if meta.get("format_version") != AVATAR_VERSION:
                raise AvatarError(f"{path}: avatar format version {meta.get('format_version')} is not supported "
                                  f"(this iplap reads {AVATAR_VERSION}); prepare it again")
            if bundle_id is not None and meta.get("bundle_id") != bundle_id:
                raise AvatarError(f"{path} was prepared with another model bundle; prepare it again "
                                  "with this bundle (iplap prepare)")
            arrays = {}
            for name, expected in meta.get("members", {}).items():
                is_array = name.startswith("arrays/")
                try:
                    with archive.open(name) as member:
                        # Arrays are loaded; the face file is only hashed, a block at a time.
                        data = member.read() if is_array else None
                        digest = (hashlib.sha256(data) if is_array
                                  else _hash_stream(member)).hexdigest()
                except KeyError:
                    raise AvatarError(f"{path} is damaged: {name} is missing") from None
                except (zipfile.BadZipFile, OSError, EOFError):
                    raise AvatarError(f"{path} is damaged: {name} cannot be read") from None
                if digest != expected:
                    raise AvatarError(f"{path} is damaged: {name} does not match its checksum")
                if is_array:
                    try:
                        arrays[name[len("arrays/"):-len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
                    except ValueError:
                        raise AvatarError(f"{path} is damaged: {name} is not an array") from None
        try:
            track = FaceTrack(arrays["landmarks"], arrays["boxes"], int(meta["height"]), int(meta["width"]),
                              arrays["missing"], arrays["passthrough"])
            timeline = FrameTimeline(arrays["source_times"].tolist(), arrays["source_pts"].tolist(),
                                     arrays["frame_of"].tolist())
            h2 = arrays["ref_h2"]
            references = References(arrays["ref_h1"], h2, np.ascontiguousarray(h2.transpose(0, 3, 1, 2)),
                                    arrays["ref_images"], arrays["ref_index"])
            return cls(track, timeline, arrays["ref_frames"], arrays["landmark_ref_frames"], references,
                       meta["source_name"], meta["source_sha256"], meta["bundle_id"], meta.get("options", {}),
                       None, path)
        except KeyError as exc:
            raise AvatarError(f"{path} is damaged: {exc.args[0]} is missing") from None


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> str:
    archive.writestr(name, data)
    return hashlib.sha256(data).hexdigest()


def _hash_stream(stream):
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return digest


def _copy(archive: zipfile.ZipFile, name: str, source) -> str:
    """Stream a file into the archive (a long face video is not read into memory at once)."""
    digest = hashlib.sha256()
    with archive.open(name, "w", force_zip64=True) as member:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
            member.write(block)
    return digest.hexdigest()


class _OwnedMember(io.RawIOBase):
    """A zip member that closes its archive with it."""

    def __init__(self, archive: zipfile.ZipFile, member):
        super().__init__()
        self._archive, self._member = archive, member

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._member.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._member.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._member.seek(offset, whence)

    def tell(self) -> int:
        return self._member.tell()

    def close(self) -> None:
        if not self.closed:
            self._member.close()
            self._archive.close()
        super().close()

