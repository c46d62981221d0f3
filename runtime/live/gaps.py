"""In-between pictures: the frames of a turn between two renders (keyframes).

This file's part of the contract. The producer renders every k-th frame of a turn; every
frame between two renders (a *gap*) still gets its own picture unless
``LiveConfig.inbetween`` is ``"hold"``: its landmarks are predicted when the gap is
planned (the landmark generator only, a few ms), and the picture is the rendered face of
a keyframe moved to them (:mod:`..inbetween`), pasted on the gap frame's own picture of
the face video (its face box), so a video's head goes on moving, and faded as a rendered
picture is.

* ``warp`` moves the keyframe before the gap: the gap's pictures are made as soon as that
  keyframe is in hand (no added latency).
* ``morph`` mixes the keyframes on both sides. A gap can only be morphed once the render
  after it is done, so the schedule aims one gap further ahead (``Schedule.lead``); a gap
  whose first frame would be due before the render after it is ready (a turn's first gap,
  or after a slow render) is warped instead.
* ``hold`` passes the gap's renders over: the clock holds the last picture, as before; so
  does a gap longer than ``LiveConfig.max_gap``.

Pictures are queued in frame order: a warped gap right after its keyframe's pictures (or
at once if they are queued already), a morphed gap right before the next keyframe's. What
is due goes into the turn's ``pending`` list (pictures, and in-betweens still to make), which
the producer works through one picture at a time while the next render runs on its pool:
on two cores the renderer does not wait for the in-betweens (a render's intra-op threads
leave one core idle part of the time).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..constants import render_of_frame
from ..inbetween import InbetweenMaker, Keyframe, Target
from ..keyframes import inbetween_frame, plan_keyframe, plan_targets
from ..reports import Frame
from ..session import RenderPlan, StreamSession
from .pictures import PictureMaker
from .turns import Picture, Turn


@dataclass
class Gap:
    """Frames between two renders of a turn: their plans and landmarks."""

    previous: int  # the render before the gap
    following: int  # the render after it
    items: list[tuple[RenderPlan, Target | None]]
    morph: bool


@dataclass
class ToMake:
    """An in-between picture due, not yet made."""

    plan: RenderPlan
    target: Target | None
    previous: Keyframe | None
    following: Keyframe | None


@dataclass
class TurnKeys:
    """A turn's keyframes as far as the gaps need them, and its gaps not yet made."""

    maker: InbetweenMaker = field(default_factory=InbetweenMaker)
    key: Keyframe | None = None  # the last render's keyframe, once taken
    taken: int = -1  # the last render taken
    gaps: deque = field(default_factory=deque)  # Gap, in order
    pending: deque = field(default_factory=deque)  # Picture or ToMake, in frame order: due to be queued


class Gaps:
    """Plans gaps and makes their pictures, for the producer (its thread only)."""

    def __init__(self, mode: str, pictures: PictureMaker, max_gap: int):
        self.mode, self.pictures, self.max_gap = mode, pictures, max_gap

    def keys(self, turn: Turn) -> TurnKeys:
        if turn.keys is None:
            turn.keys = TurnKeys()
        return turn.keys

    def plan(self, turn: Turn, session: StreamSession, count: int, lead_ok: bool, playhead: int) -> None:
        """Take the next ``count`` renders of ``session`` as a gap (or pass them over, ``hold``);
        frames already shown are passed over. The render after them is planned next."""
        if count <= 0:
            return
        if self.mode == "hold" or count > self.max_gap:
            session.skip(count)
            return
        previous = render_of_frame(session.frames_done) - 1  # the render before the gap
        shown = min(count, max(0, playhead + 1 - session.frames_done))  # nothing to make for those
        session.skip(shown)
        plans = [session.plan_next() for _ in range(count - shown)]
        items = list(zip(plans, plan_targets(session, plans)))  # their landmarks in one batch
        if items:
            following = items[-1][0].render + 1
            self.keys(turn).gaps.append(Gap(previous, following, items, self.mode == "morph" and lead_ok))

    def warp_ready(self, turn: Turn) -> None:
        """Warped gaps whose keyframe is already taken become due."""
        keys = self.keys(turn)
        while keys.gaps and not keys.gaps[0].morph and keys.gaps[0].previous <= keys.taken:
            keys.pending.extend(ToMake(plan, target, keys.key, None) for plan, target in keys.gaps.popleft().items)

    def around(self, turn: Turn, session: StreamSession, plan: RenderPlan, frames: list[Frame],
               rendered: list[Picture]) -> None:
        """A render's pictures become due, with the gaps on either side that it completes:
        morphed gaps before it, warped gaps after it."""
        keys = self.keys(turn)
        key = plan_keyframe(frames[-1], plan, session) if frames else None
        while keys.gaps and keys.gaps[0].following <= plan.render:
            gap = keys.gaps.popleft()
            following = key if gap.morph else None
            keys.pending.extend(ToMake(p, target, keys.key, following) for p, target in gap.items)
        keys.pending.extend(rendered)
        keys.taken = plan.render
        if key is not None:
            keys.key = key
            keys.maker.bank.add(key)
        self.warp_ready(turn)

    def pending(self, turn: Turn) -> bool:
        return turn.keys is not None and bool(turn.keys.pending)

    def next_picture(self, turn: Turn, session: StreamSession) -> Picture | None:
        """The first due picture, made now if it is an in-between (None: its time has passed)."""
        keys = self.keys(turn)
        entry = keys.pending.popleft()
        if isinstance(entry, Picture):
            return entry
        if entry.plan.indices[-1] <= turn.playhead:
            session.account(entry.plan)
            return None
        frame = inbetween_frame(session, entry.plan, entry.target, entry.previous, entry.following, keys.maker)
        return self.pictures.rendered(turn, frame)


__all__ = ["Gap", "Gaps", "ToMake", "TurnKeys"]
