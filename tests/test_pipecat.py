"""The Pipecat adapter (iplap.integrations.pipecat.IplapVideoService).

With Pipecat's own test harness (``pipecat.tests.utils.run_test``): a reply's pictures and
their audio, idle frames around it, the TTS frames re-timed to playback, resampling,
interruption and passthrough; then the service in a pipeline with a real
SmallWebRTCTransport, an aiortc peer on this machine receiving its video and audio; then
the example bot writing a file. Each test runs the session on the wall clock (idle frames
come at 25 fps, so a test's frame count stays small) with the shortest speech that makes a
turn with fades, and the fewest references. Numbers are printed (-s).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the pipecat tests need the pipecat extra")

from pipecat.audio.utils import create_stream_resampler  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    InterruptionFrame,
    InterruptionWorkerFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline as PipecatPipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.tests.utils import run_test  # noqa: E402

import iplap  # noqa: E402
from iplap.integrations.pipecat import IplapVideoService  # noqa: E402
from iplap.runtime.audio import load_audio  # noqa: E402
from iplap.samples import FACE_IMAGE, SPEECH_16K  # noqa: E402

REFS = 2
RATE = 16000
SECONDS = 0.78  # 20 frames of 40 ms, the last one half padded
FRAMES = int(np.ceil(SECONDS * 25))


@pytest.fixture(scope="module")
def pipeline(bundle_dir):
    return iplap.Pipeline(bundle_dir, iplap.PipelineConfig(backend=iplap.BackendConfig(threads=2), refs=REFS))


@pytest.fixture(scope="module")
def avatar(pipeline):
    return pipeline.prepare(FACE_IMAGE)


@pytest.fixture(scope="module")
def photo_rgb() -> bytes:
    """The photo as the pictures carry it: RGB bytes of the full frame."""
    return np.ascontiguousarray(cv2.imread(str(FACE_IMAGE))[:, :, ::-1]).tobytes()


def _speech(seconds: float, rate: int = RATE, offset: float = 0.8) -> np.ndarray:
    """int16 speech from the sample, at ``rate``."""
    wav = load_audio(SPEECH_16K)[int(offset * 16000):int((offset + seconds) * 16000)]
    if rate != 16000:
        wav = cv2.resize(wav.reshape(1, -1), (round(len(wav) * rate / 16000), 1), interpolation=cv2.INTER_LINEAR)[0]
    return np.round(np.clip(wav, -1, 1) * 32767).astype(np.int16)


def _tts(speech: np.ndarray, rate: int, context_id: str, chunk_seconds: float = 0.1) -> list:
    """A reply as a TTS service pushes it: started, audio chunks, stopped."""
    step = int(rate * chunk_seconds)
    return [TTSStartedFrame(context_id=context_id),
            *[TTSAudioRawFrame(speech[i:i + step].tobytes(), rate, 1, context_id=context_id)
              for i in range(0, len(speech), step)],
            TTSStoppedFrame(context_id=context_id)]


def _pictures(down) -> list[tuple[OutputImageRawFrame, OutputAudioRawFrame]]:
    """Each picture with the audio frame pushed right after it (asserting there is one)."""
    pairs = []
    for i, frame in enumerate(down):
        if isinstance(frame, OutputImageRawFrame):
            assert isinstance(down[i + 1], OutputAudioRawFrame), f"picture {len(pairs)} has no audio after it"
            pairs.append((frame, down[i + 1]))
    audio_frames = [f for f in down if isinstance(f, OutputAudioRawFrame)]
    assert len(audio_frames) == len(pairs)  # no audio without its picture
    return pairs


def _samples(frames) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.audio, np.int16) for f in frames]) if frames else np.zeros(0, np.int16)


def _service(pipeline, avatar, **kwargs) -> IplapVideoService:
    return IplapVideoService(face=avatar, pipeline=pipeline, **kwargs)


def test_a_reply_plays_as_pictures_with_its_own_audio(pipeline, avatar, photo_rgb):
    """Idle photo frames, the reply's lip-synced frames each carrying exactly its 40 ms of
    the TTS audio (bit for bit at the session rate), idle frames after; the TTS started and
    stopped frames come out around the reply's pictures; unrelated frames pass unchanged."""
    speech = _speech(SECONDS)
    reply = _tts(speech, RATE, "reply-1")
    before, after = TextFrame("before"), TextFrame("after")
    service = _service(pipeline, avatar)
    started = time.perf_counter()
    down, up = asyncio.run(run_test(service, frames_to_send=[before, *reply, after],
                                    pipeline_params=PipelineParams(audio_out_sample_rate=RATE)))
    seconds = time.perf_counter() - started
    stats = service.live_stats()
    print(f"\nreply: {seconds:.1f} s, {len(down)} frames down, {stats}")
    assert not any(isinstance(f, ErrorFrame) for f in up)
    assert service.sample_rate == RATE and service.frame_size == (512, 512)

    # passthrough: the same objects, in order; the TTS audio itself does not pass
    texts = [f for f in down if isinstance(f, TextFrame)]
    assert texts == [before, after] and texts[0] is before and texts[1] is after
    sent_audio = {id(f) for f in reply[1:-1]}
    assert not any(id(f) in sent_audio for f in down)

    pairs = _pictures(down)
    for image, audio in pairs:
        assert image.size == (512, 512) and image.format == "RGB" and len(image.image) == 512 * 512 * 3
        assert image.sync_with_audio
        assert audio.sample_rate == RATE and audio.num_channels == 1 and audio.num_frames == RATE // 25

    speaking = [i for i, (_, audio) in enumerate(pairs) if isinstance(audio, TTSAudioRawFrame)]
    assert len(speaking) == FRAMES and speaking == list(range(speaking[0], speaking[0] + FRAMES))
    first, end = speaking[0], speaking[-1] + 1
    assert first >= 1 and end < len(pairs)  # idle before and after
    for image, audio in pairs[:first] + pairs[end:]:
        assert image.image == photo_rgb  # a photo idles as it is
        assert type(audio) is OutputAudioRawFrame and not np.frombuffer(audio.audio, np.int16).any()

    played = _samples([audio for _, audio in pairs[first:end]])
    assert len(played) == FRAMES * RATE // 25
    assert np.array_equal(played[:len(speech)], speech) and not played[len(speech):].any()
    assert {audio.context_id for _, audio in pairs[first:end]} == {"reply-1"}
    assert any(image.image != photo_rgb for image, _ in pairs[first:end])  # the face was rendered

    # the held TTS frames: started right before the reply's first picture, stopped right after its last audio
    first_picture = down.index(pairs[first][0])
    assert down[first_picture - 1] is reply[0]
    assert down[down.index(pairs[end - 1][1]) + 1] is reply[-1]
    assert sum(isinstance(f, (TTSStartedFrame, TTSStoppedFrame)) for f in down) == 2
    assert stats.turns == 1 and stats.interrupted == 0


def test_tts_audio_at_another_rate_is_resampled_to_the_session_rate(pipeline, avatar):
    """24 kHz TTS into a 16 kHz session (the transport's, given): the pictures' audio is the
    reply resampled as Pipecat's stream resampler does it, its tail flushed at the reply's end."""
    tts_rate = 24000
    speech = _speech(SECONDS, tts_rate)
    reply = _tts(speech, tts_rate, "reply-24k")

    async def reference() -> np.ndarray:
        resampler = create_stream_resampler()
        parts = [await resampler.resample(f.audio, tts_rate, RATE) for f in reply[1:-1]]
        return np.frombuffer(b"".join(parts) + await resampler.flush(), np.int16)

    expected = asyncio.run(reference())
    service = _service(pipeline, avatar, sample_rate=RATE)
    down, up = asyncio.run(run_test(service, frames_to_send=reply,
                                    pipeline_params=PipelineParams(audio_out_sample_rate=tts_rate)))
    assert not any(isinstance(f, ErrorFrame) for f in up)
    assert service.sample_rate == RATE
    pairs = _pictures(down)
    assert {audio.sample_rate for _, audio in pairs} == {RATE}
    played = _samples([audio for _, audio in pairs if isinstance(audio, TTSAudioRawFrame)])
    frames = int(np.ceil(len(expected) * 25 / RATE))
    print(f"\nresampled: {len(speech)} samples at 24 kHz -> {len(expected)} at 16 kHz, {frames} frames")
    assert abs(len(expected) - len(speech) * RATE / tts_rate) < 0.002 * RATE  # the flush gave the tail back
    assert len(played) == frames * RATE // 25
    assert np.array_equal(played[:len(expected)], expected) and not played[len(expected):].any()


@pytest.mark.slow  # 8 s of a late stopped frame: keeps the default run under 15 minutes
def test_a_gap_in_the_tts_audio_ends_the_reply_before_its_stopped_frame(pipeline, avatar, photo_rgb):
    """A TTS that pushes its stopped frame seconds after its last audio: the reply ends when
    its speech runs out (no stalled frames, no frozen picture), and the late stopped frame
    is passed on when it comes, after the idle frames that followed the reply."""
    from pipecat.tests.utils import SleepFrame

    speech = _speech(SECONDS)
    reply = _tts(speech, RATE, "reply-late")
    service = _service(pipeline, avatar, end_of_turn_after_s=0.3)
    down, up = asyncio.run(run_test(service, frames_to_send=[*reply[:-1], SleepFrame(sleep=8.0), reply[-1]],
                                    pipeline_params=PipelineParams(audio_out_sample_rate=RATE)))
    stats = service.live_stats()
    assert not any(isinstance(f, ErrorFrame) for f in up)
    pairs = _pictures(down)
    speaking = [i for i, (_, audio) in enumerate(pairs) if isinstance(audio, TTSAudioRawFrame)]
    idle_before_stop = sum(1 for f in down[down.index(pairs[speaking[-1]][1]):down.index(reply[-1])]
                           if isinstance(f, OutputImageRawFrame))
    print(f"\ngap: {len(speaking)} speaking frames, {idle_before_stop} idle frames before the late stopped frame")
    assert len(speaking) == FRAMES and stats.stalls == 0 and stats.turns == 1
    assert np.array_equal(_samples([pairs[i][1] for i in speaking])[:len(speech)], speech)
    assert idle_before_stop >= 1 and all(pairs[i][0].image == photo_rgb for i in range(speaking[-1] + 1, len(pairs)))
    assert [f for f in down if isinstance(f, (TTSStartedFrame, TTSStoppedFrame))] == [reply[0], reply[-1]]


class _InterruptAfter(FrameProcessor):
    """Asks the pipeline for an interruption after ``speaking`` frames of the reply: the
    worker sends an InterruptionFrame down from the top, as a user's speech would."""

    def __init__(self, speaking: int):
        super().__init__()
        self._left = speaking

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._left -= 1
            if self._left == 0:
                await self.push_frame(InterruptionWorkerFrame(), FrameDirection.UPSTREAM)


def test_an_interruption_makes_the_next_frames_idle(pipeline, avatar, photo_rgb):
    """Three frames into the reply an InterruptionFrame comes: no more of the reply
    is heard or seen, the next pictures are the idle photo with silence, and the held
    TTSStoppedFrame is dropped (the interruption has told the transport)."""
    reply = _tts(_speech(SECONDS), RATE, "reply-cut")
    service = _service(pipeline, avatar)
    down, up = asyncio.run(run_test(PipecatPipeline([service, _InterruptAfter(3)]), frames_to_send=reply,
                                    pipeline_params=PipelineParams(audio_out_sample_rate=RATE)))
    assert not any(isinstance(f, ErrorFrame) for f in up)
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    heard = [f for f in down[:cut] if isinstance(f, TTSAudioRawFrame)]
    after = _pictures(down[cut + 1:])
    print(f"\ninterrupted after {len(heard)} speaking frames; {len(after)} idle frames follow")
    assert 3 <= len(heard) < FRAMES
    assert after and not any(isinstance(f, TTSAudioRawFrame) for f in down[cut:])
    assert all(image.image == photo_rgb and not np.frombuffer(audio.audio, np.int16).any()
               for image, audio in after)
    assert not any(isinstance(f, TTSStoppedFrame) for f in down)
    assert service.live_stats().interrupted == 1


def test_a_bad_bundle_or_face_fails_in_the_constructor(pipeline, tmp_path):
    """One-line IplapErrors, before any pipeline runs."""
    with pytest.raises(iplap.BundleError, match="not a model bundle"):
        IplapVideoService(bundle=tmp_path, face=FACE_IMAGE)
    with pytest.raises(iplap.MediaError, match="face file not found"):
        IplapVideoService(pipeline=pipeline, face=tmp_path / "missing.png")
    (tmp_path / "face.png").write_text("not a picture")
    with pytest.raises(iplap.MediaError) as info:
        IplapVideoService(pipeline=pipeline, face=tmp_path / "face.png")
    assert "\n" not in str(info.value)
    with pytest.raises(iplap.IplapError, match="a bundle or a pipeline"):
        IplapVideoService(face=FACE_IMAGE)
    with pytest.raises(iplap.MediaError, match="sample_rate"):
        IplapVideoService(pipeline=pipeline, face=FACE_IMAGE, sample_rate=10)


def test_a_webrtc_peer_receives_the_avatar_and_its_speech(pipeline, avatar):
    """The service before a real SmallWebRTCTransport (aiortc), and an aiortc peer on this
    machine: video frames of the avatar's size arrive (the first, before speech, is the
    photo through VP8), and audio arrives, silent before the reply and loud in it."""
    pytest.importorskip("aiortc")
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    speech = _speech(SECONDS)
    photo = cv2.imread(str(FACE_IMAGE))[:, :, ::-1].astype(np.float32)

    async def session():
        peer = RTCPeerConnection()
        peer.addTransceiver("audio", direction="sendrecv")  # the order SmallWebRTC expects
        peer.addTransceiver("video", direction="sendrecv")
        video, audio, readers = [], [], []

        async def read(track):
            try:
                while True:
                    frame = await track.recv()
                    if track.kind == "video":
                        video.append((time.monotonic(), frame.width, frame.height, frame.to_ndarray(format="rgb24")))
                    else:
                        audio.append((time.monotonic(), frame.sample_rate, frame.to_ndarray()))
            except MediaStreamError:
                pass

        peer.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
        await peer.setLocalDescription(await peer.createOffer())
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=peer.localDescription.sdp, type=peer.localDescription.type)
        answer = connection.get_answer()
        await peer.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

        service = _service(pipeline, avatar)
        width, height = service.frame_size
        transport = SmallWebRTCTransport(connection, TransportParams(
            audio_out_enabled=True, video_out_enabled=True, video_out_is_live=False, video_out_width=width,
            video_out_height=height, video_out_framerate=25))
        worker = PipelineWorker(PipecatPipeline([service, transport.output()]), cancel_on_idle_timeout=False,
                                params=PipelineParams(audio_out_sample_rate=RATE))
        marks = {}

        async def speak():
            begun = time.monotonic()
            while len(video) < 10 and time.monotonic() - begun < 30:  # the peer sees the idle avatar first
                await asyncio.sleep(0.02)
            marks["speech"] = time.monotonic()
            await worker.queue_frames(_tts(speech, RATE, "webrtc"))
            await worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(asyncio.gather(runner.run(), speak()), 60)
        await asyncio.sleep(0.2)
        await peer.close()
        for reader in readers:
            reader.cancel()
        return video, audio, marks, service.live_stats()

    started = time.perf_counter()
    video, audio, marks, stats = asyncio.run(session())
    print(f"\nwebrtc: {time.perf_counter() - started:.1f} s, {len(video)} video frames, {len(audio)} audio frames, "
          f"{stats}")
    assert len(video) >= 10 and {(w, h) for _, w, h, _ in video} == {(512, 512)}
    assert np.abs(video[0][3].astype(np.float32) - photo).mean() < 8  # the photo, through a lossy codec
    assert audio
    level = lambda frames: max((np.abs(a.astype(np.float32)).max() for _, _, a in frames), default=0.0)  # noqa: E731
    quiet = level([a for a in audio if a[0] < marks["speech"]])
    loud = level([a for a in audio if a[0] >= marks["speech"]])
    print(f"webrtc audio peak before the reply {quiet:.0f}, during it {loud:.0f}; speech peak {np.abs(speech).max()}")
    assert quiet < 200 and loud > 0.25 * np.abs(speech).max()
    assert stats.turns == 1


@pytest.mark.slow  # a subprocess and 2 s of rendering: keeps the default run under 15 minutes
def test_the_example_bot_writes_a_file(bundle_dir, tmp_path):
    """examples/pipecat_bot.py --out: the sample speech through the service into an mp4 of the
    avatar's size with an audio track, for the seconds asked (no keys, no network)."""
    av = pytest.importorskip("av")
    bot = Path(__file__).resolve().parents[1] / "examples" / "pipecat_bot.py"
    out = tmp_path / "bot.mp4"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(bot), "--bundle", str(bundle_dir), "--refs", str(REFS),
                             "--threads", "2", "--out", str(out), "--seconds", "2"],
                            capture_output=True, text=True, timeout=120)
    print(f"\nbot: {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-2000:]
    with av.open(str(out)) as container:
        (stream,) = container.streams.video
        assert (stream.codec_context.width, stream.codec_context.height) == (512, 512)
        frames = sum(1 for _ in container.decode(stream))
        assert container.streams.audio
    assert frames == 50  # 2 s at 25 fps
    assert subprocess.run([sys.executable, str(bot), "--help"], capture_output=True, timeout=60).returncode == 0
