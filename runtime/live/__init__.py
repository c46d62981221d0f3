"""An always-on live session: :class:`LiveSession` (speech pushed at any time, frames at 25 fps).

``Pipeline.open_live(avatar, sample_rate, channels)`` gives one. It yields a
:class:`LiveFrame` every 40 ms for as long as it is open: the avatar idling (a photo
shown as it is; a face video playing forward and back, as renders ping-pong it) until
speech is pushed, then lip-synced frames, then idle again. Nothing here renders a face:
each turn renders with a :class:`~..session.StreamSession` of the pipeline's.

Stages, one file each, each with its part of the contract in its docstring:

    push(samples) -> turns.py (a turn: its samples, held once)
    -> producer.py (the worker thread: the turn's StreamSession, its schedule of k)
    -> pictures.py (blend and cross-fade, the tail, the idle loop)
    -> turns.py (the picture queue, a few frames ahead)
    -> clock.py (frames() on the clock, and the playback events)

``types.py`` holds what callers see (:class:`LiveConfig`, :class:`LiveFrame`,
:class:`LiveEvent`, :class:`LiveStats`), ``session.py`` puts the parts together, and
``bridge.py`` (:class:`LiveBridge`) delivers a session's frames onto an asyncio loop for the
front ends that run one. No file here imports the pipeline: a live session takes what it
renders with as a :class:`~..session.StreamSetup`.
"""

from .bridge import LiveBridge
from .session import LiveSession
from .types import EVENTS_KEPT, LiveConfig, LiveEvent, LiveFrame, LiveStats

__all__ = ["EVENTS_KEPT", "LiveBridge", "LiveConfig", "LiveEvent", "LiveFrame", "LiveSession", "LiveStats"]
