"""Which TTS frames the Pipecat service pushes, and when: :class:`Replies`, a state machine.

It knows Pipecat's ``TTSStartedFrame``/``TTSStoppedFrame`` only as values to hold and give
back, so it runs (and is tested) without Pipecat. The service tells it what happens (a TTS
context starts or stops, speech joins a live turn, an interruption, a picture about to be
pushed) and pushes what it answers. The rules:

* A TTS context (started .. stopped) may span several live turns (a gap in its audio ends a
  turn early); its started frame goes with its first turn, its stopped frame with its last.
* The started frame is pushed just before the turn's first picture; the stopped frame just
  after its last (before the next turn's first picture, or the first idle picture), so the
  transport's "bot speaking" state follows what is heard.
* A context without audio has both frames passed on when its stopped frame comes; a stopped
  frame that comes after its reply has played is passed on at once.
* After an interruption, pictures of the turns before it are dropped, the context's frames
  still to come are dropped (the interruption tells the transport), and the held stopped
  frame is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    """A live turn: the TTS frames to push when it starts and ends playing."""

    context_id: str | None
    started: Any = None  # the context's TTSStartedFrame, for its first turn
    stopped: Any = None  # the context's TTSStoppedFrame, once it came
    played: bool = False


@dataclass
class _Context:
    """The TTS context being received (TTSStartedFrame .. TTSStoppedFrame)."""

    started: Any
    last_reply: Reply | None = None  # its most recent live turn
    interrupted: bool = False  # its frames still to come are dropped


class Replies:
    """The service's replies (all calls on the event loop)."""

    def __init__(self):
        self.open: int | None = None  # the live turn speech is being pushed into
        self._last_turn: int | None = None
        self._replies: dict[int, Reply] = {}  # turns pushed and not yet played to their end
        self._cutoff = 0  # pictures of turns below this were interrupted: dropped
        self._context: _Context | None = None
        self._showing: int | None = None  # the turn of the last picture pushed

    # -- what the TTS does -------------------------------------------------------------------
    def context_started(self, frame) -> None:
        """A TTSStartedFrame (the service ends the open turn first)."""
        self._context = _Context(frame)

    @property
    def accepting(self) -> bool:
        """Whether TTS audio is wanted (not after an interruption, until the next context)."""
        return self._context is None or not self._context.interrupted

    def speech_joined(self, turn: int, context_id: str | None) -> None:
        """Speech was pushed into live turn ``turn`` (``LiveSession.push``'s answer)."""
        self._last_turn = turn
        if turn in self._replies:
            return
        if self._context is None:  # audio without a TTSStartedFrame
            self._context = _Context(None)
        context = self._context
        reply = Reply(context_id, started=context.started if context.last_reply is None else None)
        context.last_reply = reply
        self._replies[turn] = reply
        self.open = turn

    def context_stopped(self, frame) -> list:
        """A TTSStoppedFrame (the service ends the open turn first): the frames to push now."""
        context, self._context = self._context, None
        reply = context.last_reply if context is not None else None
        if context is not None and context.interrupted:
            return []  # the interruption has told the transport
        if reply is None:  # no audio came: nothing plays, so nothing waits for it
            return [f for f in (context.started if context else None, frame) if f is not None]
        if reply.played:  # ended by a gap, and played out before this came
            return [frame]
        reply.stopped = frame
        return []

    def interrupted(self) -> None:
        """The session was interrupted: every turn so far is dropped."""
        if self._last_turn is not None:
            self._cutoff = self._last_turn + 1
        self.open = None
        self._replies.clear()
        if self._context is not None:
            self._context.interrupted = True

    # -- what the pictures do ----------------------------------------------------------------
    def wanted(self, turn: int | None) -> bool:
        """Whether a picture of ``turn`` is pushed (not one made before an interruption)."""
        return turn is None or turn >= self._cutoff

    def before_picture(self, turn: int | None) -> list:
        """The TTS frames to push before a picture of ``turn`` (the previous reply's stopped
        frame, this one's started frame), where the turn showing changes."""
        if turn == self._showing:
            return []
        frames = []
        if self._showing is not None:
            reply = self._replies.pop(self._showing, None)
            if reply is not None:
                reply.played = True
                if reply.stopped is not None:
                    frames.append(reply.stopped)
        reply = self._replies.get(turn) if turn is not None else None
        if reply is not None and reply.started is not None:
            frames.append(reply.started)
        self._showing = turn
        return frames

    def context_id(self, turn: int) -> str | None:
        reply = self._replies.get(turn)
        return reply.context_id if reply else None

    @property
    def drained(self) -> bool:
        """No reply is pending or open: an idle picture now means the last one has played."""
        return not self._replies and self.open is None

    @property
    def pending(self) -> bool:
        return bool(self._replies)


__all__ = ["Replies", "Reply"]
