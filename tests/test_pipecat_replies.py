"""The Pipecat service's reply state machine on its own (no Pipecat needed): which TTS frames
go out with the live session's pictures, and when."""

from iplap.integrations.pipecat_replies import Replies

STARTED, STOPPED = "TTSStarted", "TTSStopped"  # the frames are opaque values to it


def _show(replies, turns):
    """What is pushed for pictures of these turns (None: idle), in order."""
    out = []
    for turn in turns:
        if replies.wanted(turn):
            out += replies.before_picture(turn) + [f"picture {turn}"]
    return out


def test_a_reply_is_framed_by_its_started_and_stopped_frames_as_it_plays():
    replies = Replies()
    replies.context_started(STARTED)
    replies.speech_joined(0, "ctx")
    replies.speech_joined(0, "ctx")
    assert replies.open == 0 and replies.context_id(0) == "ctx"
    replies.open = None  # the service ended the turn
    assert replies.context_stopped(STOPPED) == []  # held until its last picture has played
    assert _show(replies, [None, 0, 0, None]) == ["picture None", STARTED, "picture 0", "picture 0", STOPPED,
                                                 "picture None"]
    assert replies.drained


def test_a_context_split_by_a_gap_starts_with_its_first_turn_and_stops_after_its_last():
    replies = Replies()
    replies.context_started(STARTED)
    replies.speech_joined(0, "ctx")
    replies.open = None  # a gap in the audio ended turn 0
    replies.speech_joined(1, "ctx")
    replies.open = None
    assert replies.context_stopped(STOPPED) == []
    assert _show(replies, [0, 1, None]) == [STARTED, "picture 0", "picture 1", STOPPED, "picture None"]


def test_a_context_without_audio_passes_both_frames_on_and_a_late_stop_goes_out_at_once():
    replies = Replies()
    replies.context_started(STARTED)
    assert replies.context_stopped(STOPPED) == [STARTED, STOPPED]
    replies.context_started(STARTED)
    replies.speech_joined(0, None)
    replies.open = None
    assert _show(replies, [0, None]) == [STARTED, "picture 0", "picture None"]  # played before its stop came
    assert replies.context_stopped(STOPPED) == [STOPPED]


def test_an_interruption_drops_the_pictures_and_frames_of_the_turns_before_it():
    replies = Replies()
    replies.context_started(STARTED)
    replies.speech_joined(0, "a")
    assert _show(replies, [0]) == [STARTED, "picture 0"]
    replies.interrupted()
    assert not replies.accepting  # the rest of the interrupted context's audio is not wanted
    assert replies.context_stopped(STOPPED) == []  # the interruption told the transport
    assert _show(replies, [0, None]) == ["picture None"]  # a picture made before it is dropped
    replies.context_started(STARTED)
    assert replies.accepting
    replies.speech_joined(1, "b")
    assert _show(replies, [1]) == [STARTED, "picture 1"]
