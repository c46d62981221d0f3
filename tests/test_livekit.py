"""The LiveKit Agents adapter (iplap.integrations.livekit) against the real livekit rtc types,
without a server: the generator alone (idle, a turn, an interruption), AvatarRunner with
QueueAudioOutput and a real AVSynchronizer over a stand-in room, speech format conversion,
errors, and the example worker's --help. Numbers are printed (-s)."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

rtc = pytest.importorskip("livekit.rtc", reason="the livekit tests need the livekit extra")
avatar_api = pytest.importorskip("livekit.agents.voice.avatar", reason="the livekit tests need livekit-agents")

import iplap  # noqa: E402
from iplap.integrations.livekit import IplapVideoGenerator  # noqa: E402
from iplap.runtime.audio import load_audio  # noqa: E402
from iplap import LiveConfig  # noqa: E402
from iplap.samples import FACE_IMAGE, SPEECH_16K  # noqa: E402

AudioSegmentEnd = avatar_api.AudioSegmentEnd
RATE = 16000
SPAN = RATE // iplap.FPS  # samples in one 40 ms frame
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "livekit_worker.py"
#: Without a clock, render a turn's first frames only; the rest are its last face pasted on
#: the idle frames (a render of the stand-in bundle costs seconds on a small machine; the
#: adapter's contract is about frames and events, test_live covers the rendering).
ONE_RENDER = LiveConfig(render_every=1000)


@pytest.fixture(scope="module")
def pipeline(bundle_dir):
    return iplap.Pipeline(bundle_dir, iplap.PipelineConfig(backend=iplap.BackendConfig(threads=2), refs=2))


@pytest.fixture(scope="module")
def photo(pipeline):
    return pipeline.prepare(FACE_IMAGE)


@pytest.fixture(scope="module")
def photo_rgba():
    return cv2.cvtColor(cv2.imread(str(FACE_IMAGE)), cv2.COLOR_BGR2RGBA)


def _speech(seconds: float, offset: float = 0.8) -> np.ndarray:
    """int16 mono speech from the sample, as a TTS would send it."""
    wav = load_audio(SPEECH_16K)[int(offset * RATE):int((offset + seconds) * RATE)]
    return np.round(wav * 32767).astype(np.int16)


def _audio_frames(samples: np.ndarray, rate: int = RATE, chunk_ms: int = 10) -> list:
    """rtc.AudioFrames of ``chunk_ms`` each; ``samples`` is (n,) or (n, channels) int16."""
    samples = samples.reshape(len(samples), -1)
    step = rate * chunk_ms // 1000
    return [rtc.AudioFrame(samples[i:i + step].tobytes(), rate, samples.shape[1], len(samples[i:i + step]))
            for i in range(0, len(samples), step)]


def _pixels(frame) -> np.ndarray:
    return np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, -1)


def _pcm(frames) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])


async def _take(it, count: int) -> list:
    return [await it.__anext__() for _ in range(count)]


async def _until(it, stop, limit: int = 400) -> list:
    """Items up to and including the first for which ``stop`` holds."""
    items = []
    while not items or not stop(items[-1]):
        assert len(items) < limit, "the awaited item never came"
        items.append(await it.__anext__())
    return items


def _check_frame_pattern(items: list) -> None:
    """Each audio frame follows its video frame, is 40 ms, int16 at the session rate."""
    for k, item in enumerate(items):
        if isinstance(item, rtc.AudioFrame):
            assert isinstance(items[k - 1], rtc.VideoFrame)
            assert (item.sample_rate, item.num_channels, item.samples_per_channel) == (RATE, 1, SPAN)
            assert item.duration == pytest.approx(0.04)


def test_turn_with_rtc_frames(pipeline, photo, photo_rgba):
    """Idle RGBA frames are the photo, with no audio; a turn pushed as 10 ms rtc.AudioFrames
    plays as video + 40 ms audio pairs carrying exactly the speech, then AudioSegmentEnd, then
    idle again."""
    speech = _speech(0.6)
    played_frames = math.ceil(len(speech) / SPAN)

    async def scenario():
        gen = IplapVideoGenerator(pipeline, photo, sample_rate=RATE, realtime=False, live_config=ONE_RENDER)
        try:
            assert (gen.options.video_width, gen.options.video_height) == photo_rgba.shape[1::-1]
            assert (gen.options.video_fps, gen.options.audio_sample_rate, gen.options.audio_channels) == (25, RATE, 1)
            it = gen.__aiter__()
            idle = await _take(it, 5)
            for frame in _audio_frames(speech):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            turn = await _until(it, lambda item: isinstance(item, AudioSegmentEnd))
            after = await _take(it, 4)
            return idle, turn, after, gen.stats()
        finally:
            await gen.aclose()

    started = time.perf_counter()
    idle, turn, after, stats = asyncio.run(scenario())
    print(f"\nturn: {len(turn)} items in {time.perf_counter() - started:.1f} s; {stats}")
    for frame in idle + after:
        assert isinstance(frame, rtc.VideoFrame) and frame.type == rtc.VideoBufferType.RGBA
        assert np.array_equal(_pixels(frame), photo_rgba)
    _check_frame_pattern(turn)
    audio = [item for item in turn if isinstance(item, rtc.AudioFrame)]
    assert len(audio) == played_frames and stats.speaking_frames == played_frames
    pcm = _pcm(audio)
    assert np.array_equal(pcm[:len(speech)], speech) and not pcm[len(speech):].any()  # zero-padded end
    first = turn.index(audio[0]) - 1  # the turn's first video frame; only idle video before it
    assert all(isinstance(item, rtc.VideoFrame) for item in turn[:first])
    speaking = [_pixels(item) for item in turn[first:-1] if isinstance(item, rtc.VideoFrame)]
    assert len(speaking) == played_frames and any(not np.array_equal(p, photo_rgba) for p in speaking)
    assert isinstance(turn[-2], rtc.AudioFrame)  # AudioSegmentEnd right after the last frame's audio
    assert stats.turns == 1 and stats.interrupted == 0


def test_clear_buffer_interrupts(pipeline, photo, photo_rgba):
    """clear_buffer mid-turn: the next frames are idle, without audio or AudioSegmentEnd, the
    live session counts the turn interrupted; a reply after it (stereo speech, RGB24 frames)
    plays whole, mixed to mono."""
    first, second = _speech(0.6), _speech(0.4, offset=1.6)

    async def scenario():
        gen = IplapVideoGenerator(pipeline, photo, sample_rate=RATE, realtime=False, video_format="rgb24",
                                  live_config=ONE_RENDER)
        try:
            it = gen.__aiter__()
            for frame in _audio_frames(first):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            before = await _until(it, lambda item: isinstance(item, rtc.AudioFrame))
            before += await _take(it, 2)
            gen.clear_buffer()
            idle = await _take(it, 6)
            interrupted = gen.stats()
            for frame in _audio_frames(np.stack([second, second], axis=1)):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            reply = await _until(it, lambda item: isinstance(item, AudioSegmentEnd))
            return before, idle, interrupted, reply, gen.stats()
        finally:
            await gen.aclose()

    before, idle, interrupted, reply, stats = asyncio.run(scenario())
    print(f"\ninterrupted after {sum(isinstance(i, rtc.AudioFrame) for i in before)} audio frames; {stats}")
    assert any(isinstance(item, rtc.AudioFrame) for item in before)
    photo_rgb = photo_rgba[..., :3]
    for frame in idle:
        assert isinstance(frame, rtc.VideoFrame) and frame.type == rtc.VideoBufferType.RGB24
        assert np.array_equal(_pixels(frame), photo_rgb)
    assert interrupted.interrupted == 1 and interrupted.turns == 0
    _check_frame_pattern(reply)
    pcm = _pcm([item for item in reply if isinstance(item, rtc.AudioFrame)])
    assert len(pcm) == math.ceil(len(second) / SPAN) * SPAN and np.array_equal(pcm[:len(second)], second)
    assert stats.turns == 1 and stats.interrupted == 1


class _Publication:
    async def wait_for_subscription(self) -> None:
        return None


class _LocalParticipant:
    def __init__(self):
        self.published = []

    async def publish_track(self, track, options):
        self.published.append(track)
        return _Publication()


class _UnservedRoom(rtc.EventEmitter):
    """What AvatarRunner uses of a connected rtc.Room (its state, its events, publishing two
    tracks), without a server: the runner's AudioSource, VideoSource and AVSynchronizer are real."""

    def __init__(self):
        super().__init__()
        self.local_participant = _LocalParticipant()

    def isconnected(self) -> bool:
        return True


def test_avatar_runner_with_queue_audio_output(pipeline, photo):
    """AvatarRunner + QueueAudioOutput + the real AVSynchronizer, with the live session's
    clock: idle video flows (tracks published) before speech; a reply is reported started
    when its first audio frame plays, and finished, with its length, after its last; a second
    one cut by clear_buffer is reported interrupted, and none of its audio follows; video
    reaches the synchronizer at 25 fps without drifting from the clock."""
    first, second = _speech(0.6), _speech(0.8, offset=1.6)
    played = math.ceil(len(first) / SPAN) * SPAN / RATE

    async def scenario():
        gen = IplapVideoGenerator(pipeline, photo, sample_rate=RATE)
        audio_out = avatar_api.QueueAudioOutput(sample_rate=RATE, wait_playback_start=True)
        room = _UnservedRoom()
        runner = avatar_api.AvatarRunner(room, audio_recv=audio_out, video_gen=gen, options=gen.options)
        pushed, events = [], []
        push = runner.av_sync.push

        async def spy(frame, timestamp=None):
            pushed.append((time.monotonic(), frame))
            await push(frame, timestamp)

        runner.av_sync.push = spy
        audio_out.on("playback_started", lambda ev: events.append(("started", len(pushed))))
        audio_out.on("playback_finished", lambda ev: events.append(("finished", ev.playback_position,
                                                                    ev.interrupted)))

        async def wait_for(condition, timeout=60.0):
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.02)

        await runner.start()
        try:
            await asyncio.sleep(0.4)
            idle_pushed = list(pushed)
            for frame in _audio_frames(first, chunk_ms=20):
                await audio_out.capture_frame(frame)
            audio_out.flush()
            await wait_for(lambda: any(e[0] == "finished" for e in events))
            mark = len(pushed)
            for frame in _audio_frames(second, chunk_ms=20):
                await audio_out.capture_frame(frame)
            audio_out.flush()
            await wait_for(lambda: sum(isinstance(f, rtc.AudioFrame) for _, f in pushed[mark:]) >= 3)
            audio_out.clear_buffer()
            await wait_for(lambda: sum(e[0] == "finished" for e in events) == 2)
            cut = len(pushed)
            await asyncio.sleep(0.3)
            return idle_pushed, pushed, events, mark, cut, room, gen.stats()
        finally:
            await runner.aclose()
            await gen.aclose()

    idle_pushed, pushed, events, mark, cut, room, stats = asyncio.run(scenario())
    video_times = [t for t, f in pushed if isinstance(f, rtc.VideoFrame)]
    elapsed = video_times[-1] - video_times[0]
    lag = [t - n / iplap.FPS for n, t in enumerate(video_times)]
    lag = [x - min(lag) for x in lag]  # behind a 25 fps schedule that starts as early as the frames allow
    print(f"\nrunner: {len(video_times)} video frames in {elapsed:.2f} s ({(len(video_times) - 1) / elapsed:.1f} fps), "
          f"lag behind the clock max {max(lag) * 1000:.0f} ms, last {lag[-1] * 1000:.0f} ms; events {events}; {stats}")
    assert idle_pushed and all(isinstance(f, rtc.VideoFrame) for _, f in idle_pushed)
    assert len(room.local_participant.published) == 2  # audio and video, at the first idle frame
    audio_at = [k for k, (_, f) in enumerate(pushed) if isinstance(f, rtc.AudioFrame)]
    second_at = next(k for k in audio_at if k >= mark)
    started = [e for e in events if e[0] == "started"]
    # As each reply's audio plays: not before its first audio frame reaches the synchronizer,
    # and within a few frames of it (the runner's event rides the event loop, which a busy
    # machine delays: 2 frames were seen, 4 (160 ms, a picture and its audio each) are allowed).
    assert len(started) == 2
    for (_, at), first_audio_at in zip(started, (audio_at[0], second_at)):
        assert first_audio_at + 1 <= at <= first_audio_at + 1 + 2 * 4, (started, first_audio_at)  # 4 frames
    finished = [e for e in events if e[0] == "finished"]
    assert finished[0] == ("finished", pytest.approx(played), False)
    assert finished[1][2] is True and 0 < finished[1][1] < len(second) / RATE
    first_audio = [f for _, f in pushed[:mark] if isinstance(f, rtc.AudioFrame)]
    assert np.array_equal(_pcm(first_audio)[:len(first)], first) and len(first_audio) == round(played * iplap.FPS)
    assert not any(isinstance(f, rtc.AudioFrame) for _, f in pushed[cut:])  # nothing of the cut reply after
    assert stats.turns == 1 and stats.interrupted == 1
    # 25 fps on one schedule: behind it by a bounded lag that does not grow
    assert max(lag) < 0.5 and (len(video_times) - 1) / elapsed == pytest.approx(25, rel=0.15)


def test_speech_format_conversion(pipeline, photo):
    """Stereo 48 kHz frames are resampled and mixed to the generator's 16 kHz mono: the
    live session holds as many seconds as were pushed (too short to render: nothing plays)."""
    seconds = 0.1
    t = np.arange(int(48000 * seconds)) / 48000
    tone = np.round(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)

    async def scenario():
        gen = IplapVideoGenerator(pipeline, photo, sample_rate=RATE, realtime=False)
        try:
            for frame in _audio_frames(np.stack([tone, tone], axis=1), rate=48000):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            return gen.stats()
        finally:
            await gen.aclose()

    stats = asyncio.run(scenario())
    assert stats.queued_speech_seconds == pytest.approx(seconds, abs=0.004)


def test_errors_are_one_line(pipeline, photo):
    """Bad settings, a wrong push and use after aclose are IplapErrors of one line."""
    messages = []
    for kwargs in ({"video_format": "bgr"}, {"max_pending_frames": 0}, {"sample_rate": 4000}):
        with pytest.raises(iplap.IplapError) as err:
            IplapVideoGenerator(pipeline, photo, **kwargs)
        messages.append(str(err.value))

    async def scenario():
        gen = IplapVideoGenerator(pipeline, photo, realtime=False)
        with pytest.raises(iplap.IplapError) as err:
            await gen.push_audio(np.zeros(240, np.int16))
        messages.append(str(err.value))
        await gen.aclose()
        await gen.aclose()  # again: nothing happens
        with pytest.raises(iplap.IplapError) as err:
            await gen.push_audio(AudioSegmentEnd())
        messages.append(str(err.value))
        with pytest.raises(iplap.IplapError):
            await gen.__aiter__().__anext__()

    asyncio.run(scenario())
    print("\n" + "\n".join(messages))
    assert "video_format" in messages[0] and "max_pending_frames" in messages[1]
    assert "rtc.AudioFrame" in messages[3] and "closed" in messages[4]
    assert all(message and "\n" not in message for message in messages)


def test_example_worker_help():
    """The example worker imports and prints its own and LiveKit's options without connecting."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    for word in ("--bundle", "--face", "dev", "start", "connect"):
        assert word in result.stdout


def test_a_reply_cut_while_its_picture_is_out_yields_none_of_its_audio(pipeline, photo):
    """The runner may call clear_buffer() while a speaking picture it was given is still with
    it: the audio and the segment end of that frame, which would start a new playback in the
    runner, do not follow it. (Seen once in CI on a slow host: a third "started" after the
    interrupted one.) The frames are handed to the stream by hand, so that the order is exact."""
    from iplap.integrations.livekit import _Item

    class HandedOver:
        """Stands in for the live bridge: these items, in order, and no frames of the session's own."""

        def __init__(self, items):
            self.items = list(items)

        def __aiter__(self):
            return self

        async def __anext__(self):
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop(0)

    async def scenario():
        gen = IplapVideoGenerator(pipeline, photo, sample_rate=RATE)
        bridge = gen._bridge
        try:
            await gen.push_audio(_audio_frames(_speech(0.2))[0])  # a reply starts: the session's turn 0
            image = np.zeros((photo.frame_size[1], photo.frame_size[0], 3), np.uint8)
            video, audio = gen._video_frame(image), gen._audio_frame(np.zeros((SPAN, 1), np.int16))
            last = _Item(0, video, audio, True)  # the reply's last frame: AudioSegmentEnd would follow
            gen._bridge, gen._started = HandedOver([_Item(0, video, audio, False), last,
                                                    _Item(None, video, None, False)]), True
            stream = gen._stream()
            got = [await stream.__anext__(), await stream.__anext__()]  # a whole speaking frame: picture, audio
            got.append(await stream.__anext__())  # the next picture: with the runner now
            gen.clear_buffer()
            got.append(await stream.__anext__())  # its audio and its segment end are dropped: the idle picture
            await stream.aclose()
            return got
        finally:
            gen._bridge = bridge
            await gen.aclose()

    got = asyncio.run(scenario())
    assert [type(x).__name__ for x in got] == ["VideoFrame", "AudioFrame", "VideoFrame", "VideoFrame"]
