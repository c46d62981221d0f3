"""Live sessions and a load test against a real ``iplap serve``, one server per bundle.

For every bundle given (fp32, int8, ...): start ``iplap serve`` on a free loopback port,
upload the sample photo, and run a live session that sends the sample speech in 100 ms
chunks at real-time pace, as a microphone would. Reported: the first-frame latency (first
audio chunk sent -> first frame received) and the sustained frame rate, as the server's
closing message states them and as the client saw them. Then, on the first bundle, the
load test: ``--clients`` clients submit a job each at once to a server with
``--max-sessions``; jobs done, 429s, wall time and the server's peak RSS.

    python -m iplap.benchmarks.bench_serve --bundle fp32/ --bundle int8/ --refs 5
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def start_server(bundle: Path, avatar_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "iplap", "serve", "--bundle", str(bundle), "--port", "0",
            "--avatar-dir", str(avatar_dir), *extra]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stderr:
        found = re.search(r"iplap serve: (http://\S+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, found.group(1)
    raise RuntimeError(f"iplap serve did not start (exit code {process.wait()})")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def speech(seconds: float | None = None) -> tuple[bytes, int]:
    """The sample speech as float32 PCM (16 kHz mono), cut to ``seconds``."""

    import iplap
    from iplap.samples import SPEECH_16K

    samples = iplap.load_speech(SPEECH_16K).samples[:, 0]
    if seconds is not None:
        samples = samples[:int(seconds * 16000)]
    return samples.astype("<f4").tobytes(), 16000


async def upload_face(session, url: str) -> str:
    import aiohttp

    from iplap.samples import FACE_IMAGE

    form = aiohttp.FormData()
    form.add_field("face", FACE_IMAGE.read_bytes(), filename="astronaut.png")
    async with session.post(url + "api/avatars", data=form) as response:
        body = await response.json()
        if response.status not in (200, 201):
            raise RuntimeError(body)
        return body["id"]


async def live_session(url: str, pcm: bytes, rate: int, realtime: bool = True) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        avatar = await upload_face(session, url)
        ws_url = url.replace("http", "ws", 1) + f"api/live?avatar={avatar}"
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"type": "start", "sample_rate": rate, "channels": 1, "format": "f32le"}))
            ready = json.loads((await ws.receive()).data)
            assert ready["type"] == "ready", ready
            chunk = rate // 10 * 4
            first_sent = None
            frames_seen = []

            async def send():
                nonlocal first_sent
                begin = time.perf_counter()
                for k, i in enumerate(range(0, len(pcm), chunk)):
                    if realtime:  # as a microphone: 100 ms of speech every 100 ms
                        await asyncio.sleep(max(0.0, begin + k * 0.1 - time.perf_counter()))
                    await ws.send_bytes(pcm[i:i + chunk])
                    first_sent = first_sent or time.perf_counter()
                await ws.send_str(json.dumps({"type": "end"}))

            sender = asyncio.create_task(send())
            end = None
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    (length,) = struct.unpack(">I", message.data[:4])
                    if json.loads(message.data[4:4 + length])["type"] == "frame":
                        frames_seen.append(time.perf_counter())
                elif message.type == aiohttp.WSMsgType.TEXT:
                    end = json.loads(message.data)
            await sender
    if end is None or end.get("type") != "end":
        raise RuntimeError(f"the live session failed: {end}")
    seen_fps = (len(frames_seen) - 1) / (frames_seen[-1] - frames_seen[0]) if len(frames_seen) > 1 else None
    return {"frames": end["frames"], "server_first_frame_latency_s": end["first_frame_latency_s"],
            "server_fps": end["fps"], "client_first_frame_latency_s": frames_seen[0] - first_sent,
            "client_fps": seen_fps, "dropped_frames": end["dropped_frames"]}


async def load_test(url: str, clients: int, seconds: float) -> dict:
    import aiohttp
    import soundfile

    pcm, rate = speech(seconds)
    import numpy as np

    wav = io.BytesIO()
    soundfile.write(wav, np.frombuffer(pcm, "<f4"), rate, format="WAV")
    async with aiohttp.ClientSession() as session:
        avatar = await upload_face(session, url)

        async def client(k):
            form = aiohttp.FormData()
            form.add_field("avatar", avatar)
            form.add_field("audio", wav.getvalue(), filename=f"s{k}.wav")
            async with session.post(url + "api/jobs", data=form) as response:
                if response.status == 429:
                    return "429"
                job = await response.json()
            while True:
                async with session.get(url + f"api/jobs/{job['id']}") as response:
                    job = await response.json()
                if job["state"] not in ("queued", "running"):
                    return job["state"]
                await asyncio.sleep(0.2)

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - start
    return {"clients": clients, "done": outcomes.count("done"), "refused_429": outcomes.count("429"),
            "lost": clients - outcomes.count("done") - outcomes.count("429"), "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True, help="a bundle (repeat)")
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="speech per live session (default 3)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--max-sessions", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict = {"live": {}, "cpu_count": os.cpu_count()}
    pcm, rate = speech(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        for k, bundle in enumerate(args.bundle):
            process, url = start_server(bundle, Path(tmp) / f"avatars{k}", "--refs", str(args.refs),
                                        "--max-sessions", str(args.max_sessions), "--max-queue", str(args.max_queue))
            try:
                precision = json.loads((bundle / "manifest.json").read_text()).get("precision", "fp32")
                asyncio.run(live_session(url, pcm[:rate * 4], rate, realtime=False))  # warm-up
                results["live"][f"{precision} ({bundle.name})"] = asyncio.run(live_session(url, pcm, rate))
                if k == 0:
                    results["load"] = asyncio.run(load_test(url, args.clients, 0.3))
                    results["load"]["server_peak_rss_mb"] = peak_rss_mb(process.pid)
                    results["load"]["max_sessions"] = args.max_sessions
                    results["load"]["max_queue"] = args.max_queue
            finally:
                process.terminate()
                process.wait(timeout=60)
    print(f"live sessions, N={args.refs}, {args.seconds:g} s of speech sent at real-time pace:")
    for name, r in results["live"].items():
        print(f"  {name:24s} first frame {r['client_first_frame_latency_s']:.2f} s after the first audio "
              f"(server: {r['server_first_frame_latency_s']:.2f} s), {r['server_fps']:.2f} fps sustained, "
              f"{r['frames']} frames, {r['dropped_frames']} dropped")
    load = results.get("load")
    if load:
        print(f"load: {load['clients']} clients at once, --max-sessions {load['max_sessions']} --max-queue "
              f"{load['max_queue']}: {load['done']} done, {load['refused_429']} answered 429, {load['lost']} lost, "
              f"{load['wall_s']:.1f} s, server peak RSS {load['server_peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
