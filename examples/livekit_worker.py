"""A LiveKit agent worker whose agent is an iplap avatar: it joins a room, publishes the
avatar's video and voice (always on: idle until it speaks), and lip-syncs every reply.

The path of the agent's speech: AgentSession -> QueueAudioOutput -> AvatarRunner ->
iplap.integrations.livekit.IplapVideoGenerator (the live session renders) ->
AVSynchronizer -> the room (tracks "avatar_video" and "avatar_audio" of the agent).

Run it against a LiveKit server (self-hosted ``livekit-server --dev`` or LiveKit Cloud)::

    pip install "iplap[livekit]"
    export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret
    python examples/livekit_worker.py --bundle bundle --face face.png dev

then open a room with any LiveKit client (the Agents Playground, ``lk room join``, a
frontend of your own): the worker is dispatched to it and the avatar appears. Options
of this script (``--bundle``, ``--face``, ``--backend``, ``--threads``, ``--refs``,
``--speech``) come before LiveKit's command (``dev``, ``start``, ``connect --room NAME``,
see ``--help``); they are passed to the job processes as IPLAP_* environment variables,
which may be set instead.

What the agent says:

* With no models set it needs no AI service: it says ``--speech`` (a sound file; the
  sample speech by default) when it joins and whenever a participant joins, interruptible.
* With ``--stt``, ``--llm`` and ``--tts`` (LiveKit Inference model names, e.g.
  ``deepgram/nova-3``, ``openai/gpt-4.1-mini``, ``cartesia/sonic-2``; this needs LiveKit
  Cloud credentials) it is a voice assistant: the user talks, it answers, and a user who
  barges in interrupts the avatar mid-sentence.

The bundle is loaded and the face prepared once per job process (``setup_fnc``), not per
job, since that takes seconds; a job then only opens its live session.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.agents.voice import room_io
from livekit.agents.voice.avatar import AvatarRunner, QueueAudioOutput

import iplap
from iplap.integrations.livekit import IplapVideoGenerator
from iplap.samples import SPEECH_16K

logger = logging.getLogger("iplap-livekit-worker")

#: This script's options and the environment variables that carry them to the job processes.
SETTINGS = {
    "bundle": ("IPLAP_BUNDLE", "the exported model bundle folder (required)"),
    "face": ("IPLAP_FACE", "the avatar: a photo or a face video (required)"),
    "backend": ("IPLAP_BACKEND", f"inference backend: {', '.join(b.value for b in iplap.Backend)} (default onnxruntime)"),
    "threads": ("IPLAP_THREADS", "inference threads per job process"),
    "refs": ("IPLAP_REFS", f"reference images ({iplap.MIN_REFS}..{iplap.MAX_REFS}; fewer render faster)"),
    "speech": ("IPLAP_SPEECH", "what the agent says with no models set (default: the sample speech)"),
    "stt": ("IPLAP_STT", "LiveKit Inference speech-to-text model"),
    "llm": ("IPLAP_LLM", "LiveKit Inference language model"),
    "tts": ("IPLAP_TTS", "LiveKit Inference text-to-speech model"),
}
SAMPLE_RATE = 24000  # what the avatar plays: TTS output is resampled to it by the session


def _setting(name: str) -> str | None:
    return os.environ.get(SETTINGS[name][0]) or None


def _pipeline() -> iplap.Pipeline:
    bundle = _setting("bundle")
    if bundle is None:
        raise iplap.IplapError("no bundle: pass --bundle or set IPLAP_BUNDLE")
    backend = {}
    if _setting("backend"):
        backend["backend"] = _setting("backend")
    if _setting("threads"):
        backend["threads"] = int(_setting("threads"))
    config = {"backend": iplap.BackendConfig(**backend)} if backend else {}
    if _setting("refs"):
        config["refs"] = int(_setting("refs"))
    return iplap.Pipeline(bundle, iplap.PipelineConfig(**config))


def prewarm(proc: JobProcess) -> None:
    """Load the bundle and prepare the face once per job process."""
    face = _setting("face")
    if face is None:
        raise iplap.IplapError("no face: pass --face or set IPLAP_FACE")
    pipeline = _pipeline()
    proc.userdata["pipeline"] = pipeline
    proc.userdata["avatar"] = pipeline.prepare(face)


server = AgentServer(setup_fnc=prewarm, initialize_process_timeout=180.0)


async def _spoken(path: str) -> AsyncIterator[rtc.AudioFrame]:
    """A sound file as 20 ms int16 frames at 16 kHz (the session resamples them)."""
    samples = iplap.load_speech(path).for_model()
    pcm = iplap.to_pcm16(samples)
    step = 320
    for start in range(0, len(pcm), step):
        chunk = pcm[start:start + step]
        yield rtc.AudioFrame(chunk.tobytes(), 16000, 1, len(chunk))


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    video_gen = IplapVideoGenerator(ctx.proc.userdata["pipeline"], ctx.proc.userdata["avatar"],
                                    sample_rate=SAMPLE_RATE)
    # playback starts when the avatar starts talking, not when the speech is queued
    audio = QueueAudioOutput(sample_rate=video_gen.options.audio_sample_rate, wait_playback_start=True)
    runner = AvatarRunner(ctx.room, audio_recv=audio, video_gen=video_gen, options=video_gen.options)

    async def shutdown() -> None:
        await runner.aclose()
        await video_gen.aclose()

    ctx.add_shutdown_callback(shutdown)
    await runner.start()

    models = {name: _setting(name) for name in ("stt", "llm", "tts") if _setting(name)}
    session = AgentSession(**models)
    session.output.audio = audio  # the runner publishes the voice with the video
    agent = Agent(instructions="You are a friendly assistant with a face. Keep your answers short.")
    await session.start(agent=agent, room=ctx.room,
                        room_options=room_io.RoomOptions(audio_input=bool(models), close_on_disconnect=False))
    if models:
        session.generate_reply(instructions="Greet the user in one sentence.")
        return
    speech = _setting("speech") or str(SPEECH_16K)

    def say() -> None:
        session.say("(the iplap sample speech)", audio=_spoken(speech), allow_interruptions=True,
                    add_to_chat_ctx=False)

    say()
    ctx.room.on("participant_connected", lambda _participant: say())


def _parse_own_options(argv: list[str]) -> list[str]:
    """Take this script's options out of ``argv`` into the environment; the rest is LiveKit's."""
    parser = argparse.ArgumentParser(
        prog=os.path.basename(argv[0]), add_help=False,
        description="iplap avatar options (before LiveKit's command; or the IPLAP_* variables):")
    for name, (variable, text) in SETTINGS.items():
        parser.add_argument(f"--{name}", help=f"{text} [{variable}]")
    args, rest = parser.parse_known_args(argv[1:])
    if "-h" in rest or "--help" in rest:
        print(parser.format_help())
    for name, (variable, _) in SETTINGS.items():
        if getattr(args, name) is not None:
            os.environ[variable] = getattr(args, name)
    return [argv[0], *rest]


if __name__ == "__main__":
    sys.argv = _parse_own_options(sys.argv)
    cli.run_app(server)
