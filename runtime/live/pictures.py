"""Picture making: each frame's picture from a rendered face, the last face, or the idle loop.

Idle. While no turn plays the avatar idles: a photo shown as it is; a face video playing
forward and back (as renders ping-pong it), one loop position a frame.

Cross-fade (this file's part of the contract). A turn's frame ``j`` of ``length`` blends
the rendered face over the idle frame of the same loop position with alpha ``min(1, (j +
1) / (fade + 1), (length - j) / (fade + 1))``: it ramps up over the first ``fade_frames``
and down over the last, so that there is no pop where the rendered face meets the
original. The length is known once the turn's speech has all been pushed and ended; frames
rendered before that (speech trickling in slower than the model renders) fade out over the
rest only.

Tail. The frames past the model's last (a turn's audio goes on for about three more), and
frames whose render was passed over after the last one made, show the last rendered face
pasted on the idle frame of their position, fading out at the end.

Every picture is made on the producer's thread; nothing here holds the session's lock.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..avatar import Avatar
from ..compose import blend_face, face_to_uint8
from ..landmarks import pingpong_index
from ..reports import Frame
from .turns import Picture, Turn


class PictureMaker:
    """Makes a live session's pictures from the avatar's frames (read through ``reader``, the
    producer's own frame reader) and the faces its turns render."""

    def __init__(self, avatar: Avatar, reader, fade_frames: int):
        self.avatar, self.reader, self.fade_frames = avatar, reader, fade_frames

    def source_frame(self, pos: int) -> np.ndarray:
        """The face video's frame at loop position ``pos``, read-only: it is the reader's own
        (cached) array, shown as it is by idle frames, so no caller may draw into it."""
        image = self.reader[pingpong_index(pos, self.avatar.n_frames)]
        image.flags.writeable = False
        return image

    def idle(self, pos: int) -> Picture:
        image = self.source_frame(pos)
        return Picture(None, pos, image, image)

    def alpha(self, turn: Turn, j: int) -> float:
        """How much of the rendered face frame ``j`` shows: ramps up over the first
        ``fade_frames`` and down over the last (where the turn's length is known by then)."""
        steps = self.fade_frames + 1
        fade_out = 1.0 if turn.length is None else (turn.length - j) / steps
        return min(1.0, (j + 1) / steps, fade_out)

    def rendered(self, turn: Turn, frame: Frame) -> Picture:
        """A rendered (or in-between) frame of ``turn``, faded over the idle frame of its position."""
        j = frame.index
        background = self.source_frame(turn.position(j))
        if frame.face is not None:
            turn.last_face = frame.face
        made_by = None if frame.passed_through else "inbetween" if frame.inbetween else "renderer"
        return Picture(turn, j, mix(frame.image, background, self.alpha(turn, j)), background, made_by=made_by)

    def tail(self, turn: Turn, j: int) -> Picture:
        """Frame ``j`` of ``turn`` without a render of its own: the last rendered face on the
        idle frame of its position (see the module docstring)."""
        pos = turn.position(j)
        index, background = pingpong_index(pos, self.avatar.n_frames), self.source_frame(pos)
        held = j < turn.video_frames
        track = self.avatar.track
        if turn.last_face is None or track.passthrough[index]:
            return Picture(turn, j, background, background, held=held)
        box = tuple(int(v) for v in track.boxes[index])
        pasted = blend_face(background, face_to_uint8(turn.last_face), box, track.landmarks[index])
        return Picture(turn, j, mix(pasted, background, self.alpha(turn, j)), background, held=held)


def mix(front: np.ndarray, back: np.ndarray, alpha: float) -> np.ndarray:
    """``front * alpha + back * (1 - alpha)``, rounded, as uint8."""
    if alpha >= 1.0:
        return front
    return cv2.addWeighted(front, alpha, back, 1.0 - alpha, 0.0)


__all__ = ["PictureMaker", "mix"]
