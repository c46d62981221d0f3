"""Offline renders with keyframes: the renderer on every K-th frame, in-between frames on the rest.

``PipelineConfig.keyframe_every = K``: render ``i`` of a stream (constants.frames_of_render)
is drawn by the renderer when ``i % K == 0``; every other frame runs the landmark generator
only (its lips and jaw are still its own) and is made by :class:`~.inbetween.InbetweenMaker`
from the keyframes on either side of it (``morph``: offline always has the next keyframe).
Frames after the last keyframe have no next one: they are warped from the last (``warp``).
A render costs about 1/K of the renderer's time; K = 1 renders every frame, exactly as
without this module.

Frames come out in order; up to K - 1 frames wait for their next keyframe.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .compose import face_to_uint8
from .constants import FIRST_RENDER_FRAMES, check_keyframe_every
from .inbetween import InbetweenMaker, Keyframe, Target
from .reports import Frame
from .session import RenderPlan, StreamSession

#: The landmark window's centre: the frame a render is for.
_CENTRE = FIRST_RENDER_FRAMES - 1


def keyframed(session: StreamSession, every: int, maker: InbetweenMaker | None = None) -> Iterator[Frame]:
    """The session's frames with the renderer on every ``every``-th render only (see the module)."""
    every = check_keyframe_every(every)
    if every == 1:
        yield from session.frames()
        return
    maker = maker or InbetweenMaker()
    previous: Keyframe | None = None
    waiting: list[RenderPlan] = []  # frames between keyframes, waiting for the next one
    for plan in session.plans():
        if plan.render % every and previous is not None:
            waiting.append(plan)
            continue
        frames = session.execute(plan)
        key = plan_keyframe(frames[-1], plan, session)
        yield from _between(session, waiting, previous, key, maker)  # a frame without a face: warp up to it
        waiting = []
        if key is not None:
            maker.bank.add(key)
            previous = key
        yield from frames
    yield from _between(session, waiting, previous, None, maker)


def plan_targets(session: StreamSession, plans: list[RenderPlan]) -> list[Target | None]:
    """What in-between frames for the plans' frames move a keyframe to: each frame's predicted
    landmarks (all plans' in one batch), face box and picture (None: the frame is passed
    through, no face there)."""
    track = session.avatar.track
    faces = [p for p in plans if not session.passed_through(p)]
    predicted = {id(p): full[_CENTRE] for p, full in zip(faces, session.predict_many(faces))}
    return [None if id(p) not in predicted else
            Target(predicted[id(p)], tuple(int(v) for v in track.boxes[p.seq[_CENTRE]]), p.background,
                   track.landmarks[p.seq[_CENTRE]]) for p in plans]


def plan_keyframe(frame: Frame, plan: RenderPlan, session: StreamSession) -> Keyframe | None:
    """A rendered frame as a keyframe (None for a frame passed through: it has no face)."""
    if frame.passed_through or frame.face is None:
        return None
    track, centre = session.avatar.track, plan.seq[_CENTRE]
    pose = plan.pose[0][_CENTRE]
    landmarks = np.concatenate([pose, frame.content[_CENTRE]], axis=1)
    return Keyframe(face_to_uint8(frame.face), landmarks, tuple(int(v) for v in track.boxes[centre]), frame.index)


def inbetween_frame(session: StreamSession, plan: RenderPlan, target: Target | None, previous: Keyframe | None,
                    following: Keyframe | None, maker: InbetweenMaker) -> Frame:
    """The plan's frame made from ``previous`` (warp) or from both keyframes (morph, mixed by
    the frame's time between them); its own picture where there is no face or no keyframe."""
    (index,) = plan.indices
    if target is None or previous is None:
        session.account(plan)
        return Frame(index, plan.background, plan.render, dict(plan.clock.totals), passed_through=True)
    with plan.clock.time("inbetween"):
        t = 0.0 if following is None else (index - previous.index) / (following.index - previous.index)
        image = maker.frame(target, previous, following, t)
    session.account(plan)
    return Frame(index, image, plan.render, dict(plan.clock.totals), inbetween=True)


def _between(session: StreamSession, waiting: list[RenderPlan], previous: Keyframe | None,
             following: Keyframe | None, maker: InbetweenMaker) -> Iterator[Frame]:
    """The waiting frames, made from ``previous`` and ``following`` (morph), or from ``previous``
    alone where there is no next keyframe (warp)."""
    for plan, target in zip(waiting, plan_targets(session, waiting)):
        yield inbetween_frame(session, plan, target, previous, following, maker)


__all__ = ["inbetween_frame", "keyframed", "plan_keyframe", "plan_targets"]
