"""The live layer's parts on their own, without a model: the audio contract (AudioFormat,
to_pcm16), the limits' one check each, LiveStats.as_dict, the turns' state, the async
bridge, and the Pipecat adapter's reply state machine."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

import iplap
from iplap.errors import IplapError, MediaError
from iplap.limits import MAX_REFS, MIN_REFS, Backend, check_backend, check_crf, check_refs
from iplap.runtime.live.turns import LiveState, Picture
from iplap.runtime.pcm import PCM16_SCALE, AudioFormat, to_pcm16


# -- the audio contract -----------------------------------------------------------------------

@pytest.mark.parametrize("rate,channels,words", [
    (4000, 1, "sample_rate must be a whole number of Hz from 8000 to 192000, got 4000"),
    (16000.0, 1, "got 16000.0"), (True, 1, "got True"), ("x" * 100, 1, "..."),
    (16000, 3, "channels must be 1 (mono) or 2"), (16000, 1.0, "channels must be 1")])
def test_audio_format_refuses_what_the_contract_does_not_take(rate, channels, words):
    with pytest.raises(MediaError) as info:
        AudioFormat(rate, channels)
    assert words in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 160


def test_frame_spans_add_up_to_the_clock_without_drift():
    for rate in (8000, 11025, 22050, 44100, 48000):
        audio = AudioFormat(rate)
        spans = [audio.frame_span(n) for n in range(2500)]  # 100 s
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert spans[-1][1] == 100 * rate and sum(audio.frame_samples(n) for n in range(2500)) == 100 * rate


def test_int16_comes_back_bit_for_bit_and_floats_are_rounded_and_clipped():
    ints = np.arange(-32768, 32768, 7, dtype=np.int16)
    floats = AudioFormat(16000).frames(ints)
    assert floats.dtype == np.float32 and floats.shape == (ints.size, 1)
    assert np.array_equal(to_pcm16(floats)[:, 0], ints)
    assert to_pcm16(np.array([1.5, -1.5, 0.5 / PCM16_SCALE, 1.49 / PCM16_SCALE])).tolist() == [32767, -32768, 0, 1]


def test_stereo_chunks_are_whole_frames_and_mono_is_their_mean():
    stereo = AudioFormat(48000, 2)
    assert stereo.frames(np.zeros(6, np.float32)).shape == (3, 2)
    with pytest.raises(MediaError, match="whole frames"):
        stereo.frames(np.zeros(5, np.float32))
    with pytest.raises(MediaError, match="NaN"):
        stereo.frames(np.array([np.nan, 0], np.float32))
    assert stereo.mono(np.array([[0.5, -0.25]], np.float32)).tolist() == [0.125]


# -- the limits, one check each ---------------------------------------------------------------

def test_refs_crf_and_backend_checks_say_the_same_thing_everywhere():
    assert check_refs(MIN_REFS) == MIN_REFS and check_refs(MAX_REFS) == MAX_REFS
    for bad, nearest in ((0, MIN_REFS), (MAX_REFS + 1, MAX_REFS), ("5", MIN_REFS), (2.0, MIN_REFS), (True, MIN_REFS)):
        with pytest.raises(IplapError) as info:
            check_refs(bad)
        assert info.value.message.startswith("refs must be a whole number from 1 to 100")
        assert info.value.setting == "refs" and info.value.suggestion == nearest
    with pytest.raises(IplapError, match="crf must be a whole number from 0 to 51"):
        check_crf(52)
    assert check_backend("openvino") is Backend.OPENVINO and Backend.OPENVINO == "openvino"
    assert f"{Backend.OPENVINO}" == "openvino"
    with pytest.raises(IplapError, match="unknown backend 'tensorrt': choose one of onnxruntime, openvino"):
        check_backend("tensorrt")
    # the runtime's configs use the same checks
    with pytest.raises(IplapError) as info:
        iplap.PipelineConfig(refs=0)
    assert info.value.message.startswith("refs must be a whole number from 1 to 100")
    with pytest.raises(iplap.BackendError, match="unknown backend 'tensorrt'"):
        iplap.BackendConfig("tensorrt")
    assert iplap.BackendConfig("openvino").backend is Backend.OPENVINO


# -- stats ------------------------------------------------------------------------------------

def test_live_stats_as_dict_is_json_ready_with_seconds_in_s_keys():
    import json

    stats = iplap.LiveStats(frames=10, held=3, latencies=[0.123456, 0.2], real_time_factor=1.23456,
                            queued_speech_seconds=1.23456, stage_seconds={"warp": 0.012345})
    d = stats.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["held_frames"] == 3 and d["latencies_s"] == [0.1235, 0.2] and d["mean_latency_s"] == 0.1618
    assert d["real_time_factor"] == 1.235 and d["queued_speech_s"] == 1.235 and d["stage_s"] == {"warp": 0.0123}
    assert iplap.LiveStats().as_dict()["mean_latency_s"] is None


# -- the turns' state -------------------------------------------------------------------------

def _state() -> LiveState:
    image = np.zeros((4, 4, 3), np.uint8)
    return LiveState(Picture(None, 0, image, image))


def test_push_says_which_turn_the_speech_joined():
    state = _state()
    x = np.zeros((160, 1), np.float32)
    assert [state.push(x), state.push(x)] == [0, 0]
    state.end_of_turn()
    assert state.push(x) == 1
    state.interrupt()  # drops every turn: the next speech opens a new one
    assert state.push(x) == 2 and state.queued_speech_samples() == 160
    assert state.close() and not state.close()
    with pytest.raises(IplapError, match="closed"):
        state.push(x)


# -- the async bridge -------------------------------------------------------------------------

class _FakeSession:
    """frames() yields numbered frames as fast as they are taken, up to ``count``, then raises
    ``fail`` if given; counts how far the producer got."""

    def __init__(self, count: int, fail: BaseException | None = None):
        self.count, self.fail = count, fail
        self.made = 0
        self.closed = threading.Event()

    def frames(self):
        for n in range(self.count):
            if self.closed.is_set():
                return
            self.made = n + 1
            yield n
        if self.fail is not None:
            raise self.fail
        self.closed.wait()  # an open session's frames go on until it closes

    def close(self):
        self.closed.set()


def test_the_bridge_converts_on_its_thread_delivers_in_order_and_pushes_back():
    session = _FakeSession(50)
    threads = set()

    def convert(n):
        threads.add(threading.current_thread().name)
        return n * 10

    async def scenario():
        bridge = iplap.LiveBridge(session, convert, max_pending=3)
        bridge.start()
        it = bridge.__aiter__()
        first = [await it.__anext__() for _ in range(5)]
        await asyncio.sleep(0.3)  # the reader pauses: the thread waits with at most 3 converted ahead
        ahead = session.made - 5
        rest = []
        async for item in bridge:
            rest.append(item)
            if item == 490:
                break
        await bridge.aclose()
        return first, ahead, rest

    first, ahead, rest = asyncio.run(scenario())
    assert first == [0, 10, 20, 30, 40] and rest == list(range(50, 500, 10))
    assert ahead <= 3 + 1  # max_pending waiting, and the one in the thread's hands
    assert threads == {"iplap-live-bridge"} and session.closed.is_set()


def test_the_bridge_raises_the_sessions_error_on_the_loop():
    async def scenario():
        bridge = iplap.LiveBridge(_FakeSession(3, fail=MediaError("the face video broke")))
        bridge.start()
        got = []
        with pytest.raises(MediaError, match="broke"):
            async for item in bridge:
                got.append(item)
        await bridge.aclose()
        return got

    assert asyncio.run(scenario()) == [0, 1, 2]


@pytest.mark.parametrize("drain", [True, False])
def test_closing_the_bridge_drains_or_drops_what_was_converted(drain):
    async def scenario():
        session = _FakeSession(4)
        bridge = iplap.LiveBridge(session, max_pending=4)
        bridge.start()
        deadline = time.monotonic() + 10
        while session.made < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the fourth is handed over
        await bridge.aclose(drain=drain)
        return [item async for item in bridge], session.closed.is_set()

    items, closed = asyncio.run(scenario())
    assert closed and items == ([0, 1, 2, 3] if drain else [])


def test_stop_ends_the_iteration_and_leaves_the_session_open():
    async def scenario():
        session = _FakeSession(1000)
        bridge = iplap.LiveBridge(session, max_pending=1)
        bridge.start()
        got = [await bridge.__anext__()]
        bridge.stop()
        got += [item async for item in bridge]
        open_after_stop = not session.closed.is_set()
        await bridge.aclose()
        return got, open_after_stop, session.closed.is_set()

    got, open_after_stop, closed = asyncio.run(scenario())
    assert got[0] == 0 and len(got) <= 3 and open_after_stop and closed


def test_the_bridge_refuses_a_bad_queue_and_a_read_before_start():
    with pytest.raises(IplapError, match="max_pending"):
        iplap.LiveBridge(_FakeSession(1), max_pending=0)

    async def read():
        await iplap.LiveBridge(_FakeSession(1)).__anext__()

    with pytest.raises(IplapError, match="start the live bridge"):
        asyncio.run(read())
