"""``iplap serve``: the HTTP API and the WebSocket protocol against a real server on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

aiohttp = pytest.importorskip("aiohttp", reason="the serve tests need the serve extra (aiohttp)")

from iplap.samples import FACE_IMAGE, SPEECH_16K  # noqa: E402
from serveutil import REFS, RawWebSocket, parse_frame, start_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- a small synchronous client --------------------------------------------------------------------

def call(server, method: str, path: str, files: dict | None = None, fields: dict | None = None,
         headers: dict | None = None, raw: bool = False):
    """(status, JSON or bytes) of one request."""
    async def go():
        data = None
        if files or fields:
            data = aiohttp.FormData()
            for name, value in (fields or {}).items():
                data.add_field(name, str(value))
            for name, (filename, content) in (files or {}).items():
                data.add_field(name, content, filename=filename)
        async with aiohttp.ClientSession() as session:
            async with session.request(method, server.url.rstrip("/") + path, data=data,
                                       headers=server.headers() if headers is None else headers) as response:
                body = await response.read()
                if raw:
                    return response.status, body
                return response.status, json.loads(body) if body else None
    return asyncio.run(go())


def speech_bytes(seconds: float, start: float = 0.8, rate: int = 16000, fmt: str = "WAV") -> bytes:
    import iplap

    wav = iplap.load_speech(SPEECH_16K).samples[int(start * 16000):int((start + seconds) * 16000), 0]
    if rate != 16000:
        from iplap.runtime.resample import resample_like_librosa

        wav = resample_like_librosa(wav, 16000, rate)
    out = io.BytesIO()
    soundfile.write(out, wav, rate, format=fmt)
    return out.getvalue()


def wait_for(server, path: str, done, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = call(server, "GET", path)
        assert status == 200, body
        if done(body):
            return body
        time.sleep(0.2)
    raise TimeoutError(f"{path}: {body}")


def one_line_error(status, body, expected_status, *words):
    assert status == expected_status, (status, body)
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for word in words:
        assert word in body["error"], body["error"]


@pytest.fixture(scope="module")
def photo_avatar(server):
    status, body = call(server, "POST", "/api/avatars", files={"face": ("astronaut.png", FACE_IMAGE.read_bytes())})
    assert status in (200, 201), body
    assert body["state"] == "ready" and body["kind"] == "image"
    return body["id"]


# -- avatars -------------------------------------------------------------------------------------------

def test_health(server):
    status, body = call(server, "GET", "/api/health")
    assert status == 200 and body["status"] == "ok" and body["refs"] == REFS and body["slots"]["total"] == 2


def test_same_face_is_prepared_once(server, photo_avatar):
    status, body = call(server, "POST", "/api/avatars", files={"face": ("other-name.png", FACE_IMAGE.read_bytes())})
    assert status == 200 and body["id"] == photo_avatar and body["name"] == "astronaut.png"
    status, listing = call(server, "GET", "/api/avatars")
    assert [a["id"] for a in listing["avatars"]].count(photo_avatar) == 1
    assert all("sha256" not in a and "path" not in json.dumps(a) for a in listing["avatars"])


def test_prepared_faces_outlive_a_restart(bundle_dir, tmp_path):
    photo = {"face": ("astronaut.png", FACE_IMAGE.read_bytes())}
    first = start_server(bundle_dir, tmp_path / "avatars")
    try:
        status, body = call(first, "POST", "/api/avatars", files=photo)
        assert status == 201 and body["state"] == "ready", body
    finally:
        first.stop()
    again = start_server(bundle_dir, tmp_path / "avatars")
    try:
        status, listing = call(again, "GET", "/api/avatars")
        assert [(a["id"], a["state"]) for a in listing["avatars"]] == [(body["id"], "ready")]
        status, known = call(again, "POST", "/api/avatars", files=photo)
        assert status == 200 and known["id"] == body["id"]  # known already: not prepared again
    finally:
        again.stop()


def test_video_face_reports_progress_and_can_be_deleted(server, tmp_path):
    from iplap.samples.clip import head_motion_frames, write_clip

    clip = write_clip(tmp_path / "clip.mp4", head_motion_frames(1.0, size=256, seed=3))
    status, body = call(server, "POST", "/api/avatars", files={"face": ("clip.mp4", clip.read_bytes())})
    assert status == 202 and body["state"] == "preparing" and body["kind"] == "video"
    seen = []
    ready = wait_for(server, f"/api/avatars/{body['id']}", lambda b: seen.append(b["frames_done"]) or
                     b["state"] != "preparing")
    assert ready["state"] == "ready" and ready["frames"] == 25 and ready["frames_done"] == 25
    status, _ = call(server, "DELETE", f"/api/avatars/{body['id']}")
    assert status == 200
    one_line_error(*call(server, "GET", f"/api/avatars/{body['id']}"), 404, "no avatar")
    assert not (server.avatar_dir / body["id"]).exists()


@pytest.mark.parametrize("name,content,status,words", [
    ("notes.txt", b"this is not a face at all\n" * 40, 422, ("photo or a video",)),
    ("empty.png", b"", 422, ("empty",)),
    ("wall.png", None, 422, ("no face",)),
    ("huge.mp4", b"\0" * (6 * 2**20), 413, ("larger than the limit of 5 MB",)),
])
def test_bad_faces_get_one_line_errors(server, name, content, status, words):
    if content is None:
        import cv2

        content = cv2.imencode(".png", np.full((200, 300, 3), 120, np.uint8))[1].tobytes()
    answer, body = call(server, "POST", "/api/avatars", files={"face": (name, content)})
    one_line_error(answer, body, status, *words)
    # the file is named as the client sent it, once, never by the server's own name (face.png)
    assert "face." not in body["error"].replace(name, "") and body["error"].count(name) <= 1, body["error"]
    assert not [p for p in server.avatar_dir.rglob(".upload-*")]  # nothing left behind


def test_bad_requests(server, photo_avatar):
    one_line_error(*call(server, "POST", "/api/avatars", fields={"face": "x"}), 400)
    one_line_error(*call(server, "POST", "/api/avatars", files={"photo": ("a.png", FACE_IMAGE.read_bytes())}), 400,
                   "unexpected form field")
    one_line_error(*call(server, "GET", "/api/avatars/../../etc/passwd"), 404)
    one_line_error(*call(server, "GET", "/api/jobs/nope"), 404, "no job")
    one_line_error(*call(server, "DELETE", "/api/avatars/nope"), 404, "no avatar")
    one_line_error(*call(server, "GET", "/api/nothing"), 404)
    one_line_error(*call(server, "PUT", "/api/jobs"), 405)
    one_line_error(*call(server, "POST", "/api/jobs", fields={"avatar": "nope"},
                         files={"audio": ("s.wav", speech_bytes(0.5))}), 404, "no avatar")
    one_line_error(*call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar}), 400, "audio")
    one_line_error(*call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar, "refs": "many"},
                         files={"audio": ("s.wav", speech_bytes(0.5))}), 400, "refs")
    one_line_error(*call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar, "keyframe_every": "0"},
                         files={"audio": ("s.wav", speech_bytes(0.5))}), 400, "keyframe_every must be a whole number")
    one_line_error(*call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar},
                         files={"audio": ("speech.wav", b"RIFF not really a wave" * 10)}), 422, "speech.wav")
    one_line_error(*call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar},
                         files={"audio": ("silence.wav", _silence())}), 422, "silent")


def _silence() -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.zeros(16000, np.float32), 16000, format="WAV")
    return out.getvalue()


# -- jobs ----------------------------------------------------------------------------------------------------

def test_job_renders_an_mp4_with_the_speech(server, photo_avatar, tmp_path):
    from iplap.runtime.audio import count_windows, mel_frame_count

    status, job = call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar},
                       files={"audio": ("speech.mp3", speech_bytes(0.3, rate=44100, fmt="MP3"))})
    assert status == 202 and job["state"] in ("queued", "running")
    one_line_error(*call(server, "GET", f"/api/jobs/{job['id']}/video"), 409, "no video")
    done = wait_for(server, f"/api/jobs/{job['id']}", lambda b: b["state"] in ("done", "failed", "cancelled"))
    assert done["state"] == "done", done
    expected = count_windows(mel_frame_count(4800))  # 0.3 s: 4 frames
    assert done["frames_done"] == done["frames_total"] == expected and done["fps"] > 0
    status, video = call(server, "GET", f"/api/jobs/{job['id']}/video", raw=True)
    assert status == 200
    (tmp_path / "out.mp4").write_bytes(video)
    import av

    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = sum(1 for _ in container.decode(container.streams.video[0]))
        assert container.streams.audio[0].codec_context.sample_rate == 44100
    assert frames == expected


def test_job_with_other_refs_and_cancel(server, photo_avatar):
    status, job = call(server, "POST", "/api/jobs", fields={"avatar": photo_avatar, "refs": "3", "keyframe_every": "2"},
                       files={"audio": ("long.wav", speech_bytes(3.0))})
    assert status == 202 and job["refs"] == 3 and job["keyframe_every"] == 2
    wait_for(server, f"/api/jobs/{job['id']}", lambda b: b["state"] == "running" and b["frames_done"] >= 3)
    status, body = call(server, "DELETE", f"/api/jobs/{job['id']}")
    assert status == 200
    final = wait_for(server, f"/api/jobs/{job['id']}", lambda b: b["state"] not in ("queued", "running"))
    assert final["state"] == "cancelled" and final["frames_done"] < final["frames_total"]
    one_line_error(*call(server, "GET", f"/api/jobs/{job['id']}/video"), 409, "cancelled")
    assert not list(server.avatar_dir.rglob(f"{job['id']}.mp4"))


def test_jobs_submitted_at_once_fill_the_free_slots_before_the_queue(tmp_path):
    """Jobs submitted in one burst (before any of their tasks has started) take the free slots
    first: --max-sessions 2 --max-queue 3 accepts 5 of 8, not 3 (counted as waiting, they
    were refused while both slots stood free)."""
    from iplap.serve.errors import ApiError
    from iplap.serve.jobs import JobQueue
    from iplap.serve.slots import Slots

    class Store:
        def ready(self, avatar):
            return avatar

        def load(self, avatar, refs):
            return avatar

    class Pipeline:
        def render(self, avatar, audio, out, on_progress):
            time.sleep(0.01)
            on_progress(1, 1)

    async def burst():
        queue = JobQueue(Pipeline(), Store(), Slots(2, max_queue=3), tmp_path / "jobs", keep=100)
        accepted, refused = [], []
        for k in range(8):
            speech = tmp_path / f"speech{k}.wav"
            speech.write_bytes(b"checked speech")
            try:
                accepted.append(queue.submit("face", speech, ".wav", 2))
            except ApiError as exc:
                refused.append(exc.status)
        assert queue.waiting == 3
        while any(job.state in ("queued", "running") for job in accepted):
            await asyncio.sleep(0.01)
        return accepted, refused, queue

    accepted, refused, queue = asyncio.run(burst())
    assert len(accepted) == 5 and refused == [429] * 3
    assert [job.state for job in accepted] == ["done"] * 5
    assert queue.waiting == 0 and queue.slots.free == 2


# -- the live WebSocket -------------------------------------------------------------------------------------

async def _live(server, avatar: str, start: dict | str | bytes, chunks: list[bytes], end: bool = True,
                query: str = "") -> tuple[list, list]:
    """Run a live session; (text messages as dicts, binary messages) received."""
    texts, binaries = [], []
    url = server.url.replace("http", "ws", 1).rstrip("/") + f"/api/live?avatar={avatar}{query}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=server.headers()) as ws:
            if isinstance(start, dict):
                await ws.send_str(json.dumps(start))
            elif isinstance(start, str):
                await ws.send_str(start)
            else:
                await ws.send_bytes(start)
            for chunk in chunks:
                await ws.send_bytes(chunk)
            if end:
                await ws.send_str(json.dumps({"type": "end"}))
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    texts.append(json.loads(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    binaries.append(message.data)
    return texts, binaries


def test_live_session_streams_frames_with_their_audio(server, photo_avatar):
    """44.1 kHz stereo int16 in uneven chunks: every frame arrives in order as a JPEG with the
    audio it was rendered from; with the tail, all the speech comes back; the closing message
    reports the first-frame latency and the fps."""
    import cv2

    from iplap.runtime.audio import count_windows, mel_frame_count
    from iplap.runtime.resample import resample_like_librosa

    mono = soundfile.read(io.BytesIO(speech_bytes(0.4)), dtype="float32")[0]  # 6 frames
    stereo = resample_like_librosa(mono, 16000, 44100)
    pcm = (np.stack([stereo, 0.5 * stereo], 1) * 20000).astype("<i2").tobytes()
    chunks = [pcm[i:i + 4 * 1001] for i in range(0, len(pcm), 4 * 1001)]
    texts, binaries = asyncio.run(_live(server, photo_avatar, {"type": "start", "sample_rate": 44100, "channels": 2,
                                                               "format": "s16le"}, chunks))
    assert texts[0]["type"] == "ready" and texts[0]["width"] == 512 and texts[0]["fps"] == 25
    end = texts[-1]
    assert end["type"] == "end", texts
    messages = [parse_frame(b) for b in binaries]
    frames = [m for m in messages if m[0]["type"] == "frame"]
    assert [h["index"] for h, _, _ in frames] == list(range(count_windows(mel_frame_count(int(0.4 * 16000)))))
    assert end["frames"] == len(frames) and end["dropped_frames"] == 0
    assert end["first_frame_latency_s"] > 0 and end["fps"] > 0
    image = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (512, 512, 3)
    audio = b"".join(a for _, _, a in messages)
    assert audio == pcm  # every sample once, in order, in the client's own format
    for header, _, audio_bytes in frames[1:]:
        assert abs(header["audio_time"] - header["time"]) < 1e-3 and len(audio_bytes) == 4 * round(44100 / 25) \
            or len(audio_bytes) == 4 * (round((header["index"] + 1) * 44100 / 25) - round(header["index"] * 44100 / 25))
    print(f"live: {end['frames']} frames, first after {end['first_frame_latency_s']:.2f} s, {end['fps']:.2f} fps")


@pytest.mark.parametrize("start,chunks,words", [
    (b"\x00\x01", [], "text message"),
    ("not json", [], "JSON"),
    ({"type": "begin"}, [], "start"),
    ({"type": "start", "sample_rate": 4000, "channels": 1, "format": "f32le"}, [], "sample_rate"),
    ({"type": "start", "sample_rate": 16000, "channels": 3, "format": "f32le"}, [], "channels"),
    ({"type": "start", "sample_rate": 16000, "channels": 1, "format": "mp3"}, [], "format"),
    ({"type": "start", "sample_rate": 16000, "channels": 2, "format": "s16le"}, [b"\x00" * 6], "whole sample frames"),
])
def test_live_protocol_errors(server, photo_avatar, start, chunks, words):
    texts, _ = asyncio.run(_live(server, photo_avatar, start, chunks, end=False))
    assert texts[-1]["type"] == "error" and words in texts[-1]["message"], texts
    assert "\n" not in texts[-1]["message"]


def test_live_needs_a_known_ready_avatar(server):
    async def go():
        async with aiohttp.ClientSession() as session:
            url = server.url.replace("http", "ws", 1).rstrip("/") + "/api/live?avatar=nope"
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(url)
            return caught.value.status
    assert asyncio.run(go()) == 404


def test_live_too_short_speech_is_an_error(server, photo_avatar):
    texts, _ = asyncio.run(_live(server, photo_avatar, {"type": "start", "sample_rate": 16000, "channels": 1,
                                                        "format": "f32le"}, [np.zeros(800, "<f4").tobytes()]))
    assert texts[-1]["type"] == "error" and "too short" in texts[-1]["message"]


def test_slow_client_loses_pictures_not_sound_and_memory_stays_bounded(server, photo_avatar):
    """A client with a 4 KB receive buffer that reads nothing until the render is over: the server
    holds at most 3 frames (--live-pending-frames 3), drops the older pictures, and still
    delivers every sample of audio, in order."""
    host, port = server.host_port
    client = RawWebSocket(host, port, f"/api/live?avatar={photo_avatar}")
    mono = soundfile.read(io.BytesIO(speech_bytes(0.6)), dtype="float32")[0].astype("<f4")
    client.send(json.dumps({"type": "start", "sample_rate": 16000, "channels": 1, "format": "f32le"}))
    for i in range(0, mono.size, 1600):
        client.send(mono[i:i + 1600].tobytes())
    client.send(json.dumps({"type": "end"}))
    time.sleep(2.0)
    deadline = time.monotonic() + 300
    while call(server, "GET", "/api/health")[1]["slots"]["busy"] and time.monotonic() < deadline:
        time.sleep(0.5)  # rendering; the client reads nothing meanwhile
    messages = client.receive_all()
    client.close()
    texts = [json.loads(d) for op, d in messages if op == 1]
    end = texts[-1]
    assert end["type"] == "end", texts
    frames = [parse_frame(d) for op, d in messages if op == 2]
    pictures = [h for h, jpeg, _ in frames if h["type"] == "frame"]
    assert end["dropped_frames"] > 0 and end["max_pending_frames"] <= 3
    assert end["frames"] == len(pictures)
    assert b"".join(a for _, _, a in frames) == mono.tobytes()  # the sound is whole


# -- tokens and addresses ---------------------------------------------------------------------------------------

def test_token_is_required_when_set(bundle_dir, tmp_path):
    token = "s3cret-token-123"
    srv = start_server(bundle_dir, tmp_path / "avatars", token=token)
    try:
        one_line_error(*call(srv, "GET", "/api/health", headers={}), 401, "token")
        one_line_error(*call(srv, "GET", "/api/health", headers={"Authorization": "Bearer wrong-token"}), 401)
        assert call(srv, "GET", "/api/health")[0] == 200
        assert call(srv, "GET", "/", headers={}, raw=True)[0] == 200  # the page asks for the token itself

        async def live(query):
            url = srv.url.replace("http", "ws", 1).rstrip("/") + f"/api/live?avatar=x{query}"
            async with aiohttp.ClientSession() as session:
                try:
                    await session.ws_connect(url)
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status
        assert asyncio.run(live("")) == 401
        assert asyncio.run(live(f"&token={token}")) == 404  # past the token: no such avatar
    finally:
        srv.stop()


def test_other_addresses_need_a_token(bundle_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "iplap", "serve", "--bundle", str(bundle_dir), "--host", "0.0.0.0",
                          "--port", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "needs a token" in out.stderr and "--token" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_page_and_its_files_are_served(server):
    status, html = call(server, "GET", "/", raw=True)
    assert status == 200 and b"<canvas" in html and b"/static/app.js" in html
    assert b"http://" not in html and b"https://" not in html  # nothing from elsewhere: the kiosk may be offline
    for name in ("app.js", "style.css", "mic-worklet.js"):
        status, body = call(server, "GET", f"/static/{name}", raw=True)
        assert status == 200 and body
        assert b"https://" not in body and b"cdn" not in body.lower()
    one_line_error(*call(server, "GET", "/static/..%2Fapp.py"), 404)


def test_readme_lists_every_route():
    from iplap.serve.app import API

    readme = (ROOT / "README.md").read_text()
    for method, path, _ in API:
        assert f"| `{method}` | `{path}` |" in readme, (method, path)


def test_streams_must_be_a_whole_number_of_renders(bundle_dir):
    out = subprocess.run([sys.executable, "-m", "iplap", "serve", "--bundle", str(bundle_dir), "--streams", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "streams must be at least 1" in out.stderr and "Traceback" not in out.stderr
