"""A Pipecat bot with an iplap avatar that needs no cloud keys: a speech file stands in for
the TTS (it says the file every few seconds), ``IplapVideoService`` lip-syncs the avatar to
it, and a local transport shows the result.

In a browser, over WebRTC (Pipecat's SmallWebRTCTransport and a one-button page; needs
aiohttp, e.g. ``pip install "iplap[pipecat,serve]"``)::

    python examples/pipecat_bot.py --bundle bundle --face face.png
    # open http://localhost:7860 and press Connect

Into a file, for a fixed time on the wall clock (no browser, no network)::

    python examples/pipecat_bot.py --bundle bundle --out bot.mp4 --seconds 8

The speech defaults to iplap's sample (``iplap.samples.SPEECH_16K``) and the face to its
sample photo. In a real bot, a TTS service takes the place of ``FileSpeech``: the video
service goes right after it, before ``transport.output()``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline as PipecatPipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

import iplap
from iplap.integrations.pipecat import IplapVideoService
from iplap.samples import FACE_IMAGE, SPEECH_16K

PAGE = """<!doctype html><meta charset="utf-8"><title>iplap avatar</title>
<body style="font-family:sans-serif;text-align:center">
<video id="video" autoplay playsinline style="max-width:90vw;max-height:80vh;background:#222"></video>
<p><button id="connect">Connect</button> <span id="state"></span></p>
<script>
document.getElementById("connect").onclick = async (event) => {
  event.target.disabled = true;
  const pc = new RTCPeerConnection();
  pc.addTransceiver("audio", {direction: "sendrecv"});  // the order SmallWebRTC expects
  pc.addTransceiver("video", {direction: "sendrecv"});
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); document.getElementById("video").srcObject = stream; };
  pc.onconnectionstatechange = () => { document.getElementById("state").textContent = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const answer = await fetch("/api/offer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  await pc.setRemoteDescription(await answer.json());
};
</script>"""


class FileSpeech(FrameProcessor):
    """Stands in for a TTS: says the file (as TTSStarted, 100 ms audio chunks, TTSStopped)
    ``start`` seconds after the pipeline starts, then every ``every`` seconds."""

    def __init__(self, speech: iplap.Speech, start: float, every: float):
        super().__init__()
        self._samples = iplap.to_pcm16(speech.mono())
        self._rate = speech.sample_rate
        self._start, self._every = start, every
        self._task = None

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._speak())
        elif isinstance(frame, (EndFrame, CancelFrame)) and self._task is not None:
            await self.cancel_task(self._task)
            self._task = None

    async def _speak(self):
        await asyncio.sleep(self._start)
        step = self._rate // 10
        while True:
            context = f"reply-{id(self)}-{asyncio.get_running_loop().time():.0f}"
            await self.push_frame(TTSStartedFrame(context_id=context))
            for i in range(0, len(self._samples), step):
                await self.push_frame(TTSAudioRawFrame(self._samples[i:i + step].tobytes(), self._rate, 1,
                                                       context_id=context))
            await self.push_frame(TTSStoppedFrame(context_id=context))
            await asyncio.sleep(self._every + len(self._samples) / self._rate)


class FileWriter(FrameProcessor):
    """Writes the service's pictures and their audio into an mp4 (H.264 + AAC) with PyAV,
    ``limit`` pictures at most; ``done`` is set once it has them."""

    def __init__(self, path: Path, size: tuple[int, int], rate: int, limit: int):
        super().__init__()
        import av

        self._container = av.open(str(path), "w")
        self._video = self._container.add_stream("libx264", rate=25, options={"preset": "veryfast"})
        self._video.width, self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._audio = self._container.add_stream("aac", rate=rate, layout="mono")
        self._rate, self._limit = rate, limit
        self._pictures = self._samples = 0
        self.done = asyncio.Event()

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        import av

        if isinstance(frame, OutputImageRawFrame) and self._pictures < self._limit:
            width, height = frame.size
            image = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts, picture.time_base = self._pictures, Fraction(1, 25)
            self._container.mux(self._video.encode(picture))
            self._pictures += 1
        elif isinstance(frame, OutputAudioRawFrame) and self._samples < self._limit * self._rate // 25:
            samples = np.frombuffer(frame.audio, np.int16)[None, :]
            sound = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = self._rate, self._samples, Fraction(1, self._rate)
            self._container.mux(self._audio.encode(sound))
            self._samples += samples.shape[1]
            if self._pictures >= self._limit and self._samples >= self._limit * self._rate // 25:
                self.done.set()
        await self.push_frame(frame, direction)

    def close(self):
        self._container.mux(self._video.encode(None))
        self._container.mux(self._audio.encode(None))
        self._container.close()


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="the model bundle folder (`iplap export`)")
    parser.add_argument("--face", default=str(FACE_IMAGE), help="a photo or a face video (default: the sample)")
    parser.add_argument("--speech", default=str(SPEECH_16K), help="the speech file said (default: the sample)")
    parser.add_argument("--every", type=float, default=4.0, help="seconds of silence between sayings")
    parser.add_argument("--rate", type=int, default=16000, help="the session's and the transport's sample rate")
    parser.add_argument("--refs", type=int, default=iplap.DEFAULT_REFS, help="reference images (fewer: faster)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--out", type=Path, help="write an mp4 instead of serving a page")
    parser.add_argument("--seconds", type=float, default=8.0, help="with --out: how long a file")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args(argv)


def _open(args) -> tuple[iplap.Pipeline, iplap.Avatar, iplap.Speech]:
    pipe = iplap.Pipeline(args.bundle, iplap.PipelineConfig(backend=iplap.BackendConfig(threads=args.threads),
                                                            refs=args.refs))
    return pipe, pipe.prepare(args.face), iplap.load_speech(args.speech)


async def write_file(args, pipe, avatar, speech) -> None:
    service = IplapVideoService(face=avatar, pipeline=pipe, sample_rate=args.rate)
    writer = FileWriter(args.out, service.frame_size, args.rate, round(args.seconds * 25))
    worker = PipelineWorker(PipecatPipeline([FileSpeech(speech, 0.4, args.every), service, writer]),
                            params=PipelineParams(audio_out_sample_rate=args.rate), cancel_on_idle_timeout=False)

    async def stop_when_written():
        await writer.done.wait()
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    try:
        await asyncio.gather(runner.run(), stop_when_written())
    finally:
        writer.close()
    print(f"wrote {args.out} ({args.seconds:g} s); {service.live_stats()}")


async def serve(args, pipe, avatar, speech) -> None:
    from aiohttp import web
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    runner = WorkerRunner(handle_sigint=True)

    async def run_bot(connection: SmallWebRTCConnection):
        service = IplapVideoService(face=avatar, pipeline=pipe, sample_rate=args.rate)  # one live session each
        width, height = service.frame_size
        transport = SmallWebRTCTransport(connection, TransportParams(
            audio_out_enabled=True, audio_out_sample_rate=args.rate, video_out_enabled=True,
            video_out_is_live=False, video_out_width=width, video_out_height=height, video_out_framerate=25))
        worker = PipelineWorker(PipecatPipeline([FileSpeech(speech, 1.0, args.every), service, transport.output()]),
                                params=PipelineParams(audio_out_sample_rate=args.rate), cancel_on_idle_timeout=False)

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client):
            await worker.cancel()

        await runner.add_workers(worker)

    async def page(request):
        return web.Response(text=PAGE, content_type="text/html")

    async def offer(request):
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        asyncio.get_running_loop().create_task(run_bot(connection))
        return web.Response(text=json.dumps(connection.get_answer()), content_type="application/json")

    app = web.Application()
    app.add_routes([web.get("/", page), web.post("/api/offer", offer)])
    site_runner = web.AppRunner(app)
    await site_runner.setup()
    await web.TCPSite(site_runner, args.host, args.port).start()
    print(f"open http://{args.host}:{args.port} and press Connect (Ctrl-C stops)")
    try:
        await runner.run(auto_end=False)  # one worker per browser connection, until Ctrl-C
    finally:
        await site_runner.cleanup()


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        pipe, avatar, speech = _open(args)
    except iplap.IplapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(write_file(args, pipe, avatar, speech) if args.out else serve(args, pipe, avatar, speech))
    return 0


if __name__ == "__main__":
    sys.exit(main())
