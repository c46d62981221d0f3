"""``iplap serve`` under faults and hostile clients: every way a live session ends frees its
slot, time and memory limits hold, only the service's own pages may call it, and a crashed
or stopped server leaves nothing behind. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

aiohttp = pytest.importorskip("aiohttp", reason="the serve tests need the serve extra (aiohttp)")

from iplap.samples import FACE_IMAGE  # noqa: E402
from serveutil import RawWebSocket, start_server  # noqa: E402
from test_serve import call, one_line_error, speech_bytes, wait_for  # noqa: E402

IDLE_S, LIVE_S, UPLOAD_S = 2, 8, 8
START = {"type": "start", "sample_rate": 16000, "channels": 1, "format": "f32le"}


@pytest.fixture(scope="module")
def strict(bundle_dir, tmp_path_factory):
    """A server with small limits: 2 render slots, 1 waiting job or preparation, 2 s idle,
    8 s per live session, 3 s of job speech, face videos of 40 frames and 1 Mpx at most."""
    srv = start_server(bundle_dir, tmp_path_factory.mktemp("strict-avatars"), "--max-queue", "1",
                       "--idle-timeout-s", str(IDLE_S), "--live-timeout-s", str(LIVE_S), "--upload-timeout-s",
                       str(UPLOAD_S), "--max-speech-seconds", "3", "--max-face-frames", "40", "--max-face-pixels",
                       "1000000", "--max-upload-mb", "8", "--allow-origin", "http://localhost:3000")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def avatar(strict):
    status, body = call(strict, "POST", "/api/avatars", files={"face": ("astronaut.png", FACE_IMAGE.read_bytes())})
    assert status in (200, 201), body
    return body["id"]


def ws_url(server, avatar: str) -> str:
    return server.url.replace("http", "ws", 1).rstrip("/") + f"/api/live?avatar={avatar}"


def health(server) -> dict:
    status, body = call(server, "GET", "/api/health")
    assert status == 200, body
    return body


def wait_all_free(server, timeout: float = 60.0) -> dict:
    """Health once every slot is free and no live session is left (or the last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        body = health(server)
        slots = body["slots"]
        if (slots["free"] == slots["total"] and slots["busy"] == 0 and body["live_sessions"] == 0) \
                or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def speech_f32(seconds: float) -> bytes:
    return soundfile.read(io.BytesIO(speech_bytes(seconds)), dtype="float32")[0].astype("<f4").tobytes()


async def _session(url: str, how: str) -> list:
    """Open a live session and end it badly, ``how``; the text messages received."""
    texts = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_str(json.dumps(START))
            await ws.send_bytes(speech_f32(0.3))
            if how == "oversized":
                try:
                    await ws.send_bytes(b"\0" * (5 * 2**20))
                except ConnectionError:
                    return texts  # the server closed the connection (1009) before it all went
            elif how == "bad text":
                await ws.send_str("{\"type\": \"pause\"}")
            elif how == "close":
                await ws.close()
                return texts
            elif how == "idle":
                pass  # send nothing more: the server's idle limit ends it
            elif how == "wall":
                for _ in range(int(LIVE_S / 0.2) + 10):  # real time, never "end": the wall-clock limit ends it
                    if ws.closed:
                        break
                    await ws.send_bytes(np.zeros(3200, "<f4").tobytes())
                    await asyncio.sleep(0.2)
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    texts.append(json.loads(message.data))
    return texts


def _vanish_mid_frame(server, avatar: str) -> None:
    """Start a session, then send half of a binary frame's header and drop the connection."""
    host, port = server.host_port
    client = RawWebSocket(host, port, f"/api/live?avatar={avatar}")
    client.send(json.dumps(START))
    client.sock.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 20)[:3])
    client.sock.close()


def test_every_way_a_live_session_ends_frees_its_slot(strict, avatar):
    """Close, an oversized message, a bad message, the idle limit, the wall-clock limit and a
    client that vanishes mid-frame: afterwards both slots are free and a job renders."""
    url = ws_url(strict, avatar)
    expected = {"bad text": "after start", "idle": "no message from the client",
                "wall": "time limit"}
    for how in ("close", "oversized", "bad text", "idle", "wall"):
        started = time.monotonic()
        texts = asyncio.run(_session(url, how))
        if how in expected:
            assert texts and texts[-1]["type"] == "error" and expected[how] in texts[-1]["message"], (how, texts)
            assert "\n" not in texts[-1]["message"]
        if how == "wall":
            assert time.monotonic() - started < LIVE_S + 6
        body = wait_all_free(strict)
        assert body["slots"]["free"] == 2 and body["live_sessions"] == 0, (how, body)
    _vanish_mid_frame(strict, avatar)
    assert wait_all_free(strict)["slots"]["free"] == 2
    status, job = call(strict, "POST", "/api/jobs", fields={"avatar": avatar},
                       files={"audio": ("speech.wav", speech_bytes(0.3))})
    assert status == 202, job
    final = wait_for(strict, f"/api/jobs/{job['id']}", lambda b: b["state"] not in ("queued", "running"))
    assert final["state"] == "done", final


def test_a_polite_close_after_end_frees_the_slot_at_once(strict, avatar):
    """A one-shot session's client sends ``end``, then closes before its frames are all sent:
    the server reads the close at once (code 1000, not a dropped connection), stops the render
    and frees its slot within seconds, not at the session's time limit."""
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(strict, avatar)) as ws:
                await ws.send_str(json.dumps(START))
                await ws.send_bytes(speech_f32(2.0))  # 50 frames: far longer to render than the test waits
                await ws.send_str(json.dumps({"type": "end"}))
                await ws.receive(timeout=60)  # the session is under way
                await ws.close()
                return ws.close_code
    code = asyncio.run(go())
    closed = time.monotonic()
    assert code == 1000
    body = wait_all_free(strict, timeout=LIVE_S)
    assert body["slots"]["free"] == 2 and body["live_sessions"] == 0, body
    assert time.monotonic() - closed < 5


def test_a_client_that_never_starts_is_let_go(strict, avatar):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(strict, avatar)) as ws:
                started = time.monotonic()
                message = await ws.receive(timeout=IDLE_S + 10)
                return json.loads(message.data), time.monotonic() - started
    message, waited = asyncio.run(go())
    assert message["type"] == "error" and "no start message" in message["message"] and waited < IDLE_S + 3


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_live_memory_stays_flat_however_fast_the_client_sends(strict, avatar):
    """240 s of 48 kHz stereo float (88 MB) pushed as fast as the socket takes it: the server
    reads only what its render thread can take (4 s of audio waiting), so the client is held
    back and the server's memory does not grow with what it sends (it grew by all of it before)."""
    chunk = np.zeros((4800, 2), "<f4").tobytes()  # 0.1 s
    total = 2400 * len(chunk)
    stereo_48k = {**START, "sample_rate": 48000, "channels": 2}

    async def warm():  # the first 48 kHz stereo session's own allocations (resampler, frames)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(strict, avatar)) as ws:
                await ws.send_str(json.dumps(stereo_48k))
                await ws.receive(timeout=30)
                await ws.send_bytes(chunk * 3)  # 0.3 s: 4 frames rendered
                await ws.send_str(json.dumps({"type": "end"}))
                async for _ in ws:
                    pass
    asyncio.run(warm())
    wait_all_free(strict)
    before = _rss_mb(strict.process.pid)
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb(strict.process.pid))
            time.sleep(0.05)

    async def flood() -> int:
        sent = 0
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(strict, avatar)) as ws:
                await ws.send_str(json.dumps(stereo_48k))
                await ws.receive(timeout=30)  # ready
                deadline = time.monotonic() + 4.0
                while sent < total and time.monotonic() < deadline:
                    try:
                        await asyncio.wait_for(ws.send_bytes(chunk), max(0.01, deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        break
                    sent += len(chunk)
                await asyncio.sleep(0.5)
        return sent

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        sent = asyncio.run(flood())
    finally:
        stop.set()
        sampler.join()
    grown = peak[0] - before
    print(f"live flood: {sent / 2**20:.1f} of {total / 2**20:.0f} MB taken; server RSS {before:.0f} -> peak "
          f"{peak[0]:.0f} MB (+{grown:.1f})")
    assert sent < total / 2  # held back
    assert grown < 30, grown
    assert wait_all_free(strict)["slots"]["free"] == 2


def test_job_speech_and_face_media_are_capped(strict, avatar, tmp_path):
    from iplap.samples.clip import head_motion_frames, write_clip

    one_line_error(*call(strict, "POST", "/api/jobs", fields={"avatar": avatar},
                         files={"audio": ("long.wav", speech_bytes(3.5))}), 413, "long.wav", "longer than 3 s")
    long_clip = write_clip(tmp_path / "long.mp4", head_motion_frames(2.0, size=128, seed=5))
    one_line_error(*call(strict, "POST", "/api/avatars", files={"face": ("long.mp4", long_clip.read_bytes())}),
                   413, "long.mp4", "more than 40 frames")
    big = _png_header_only(1200, 1000)  # 1.2 Mpx claimed by a file of a few bytes
    one_line_error(*call(strict, "POST", "/api/avatars", files={"face": ("big.png", big)}), 413,
                   "1200 x 1000 pixels")
    bomb = _png_header_only(30000, 30000)
    one_line_error(*call(strict, "POST", "/api/avatars", files={"face": ("bomb.png", bomb)}), 413, "30000 x 30000")
    assert not [p for p in strict.avatar_dir.rglob(".upload-*")]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose single row is all it holds."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


def test_face_preparations_wait_in_the_queue(strict, tmp_path):
    """Videos uploaded at once take the 2 slots, 1 waits (--max-queue 1), the next is refused."""
    from iplap.samples.clip import head_motion_frames, write_clip

    clips = [write_clip(tmp_path / f"clip{seed}.mp4", head_motion_frames(1.2, size=128, seed=20 + seed)).read_bytes()
             for seed in range(4)]

    async def upload(k: int):  # all four at once: none is prepared before the last arrives
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("face", clips[k], filename=f"clip{k}.mp4")
            async with session.post(strict.url + "api/avatars", data=form) as response:
                return response.status, json.loads(await response.read())

    async def burst():
        return await asyncio.gather(*(upload(k) for k in range(4)))
    answers = sorted(asyncio.run(burst()), key=lambda answer: answer[0])
    assert [status for status, _ in answers] == [202, 202, 202, 429], answers
    one_line_error(*answers[-1], 429, "queue is full")
    for _, body in answers[:3]:
        final = wait_for(strict, f"/api/avatars/{body['id']}", lambda b: b["state"] != "preparing")
        assert final["state"] == "ready", final
        call(strict, "DELETE", f"/api/avatars/{body['id']}")
    assert wait_all_free(strict)["slots"]["free"] == 2


def test_the_avatar_folder_keeps_to_its_size(bundle_dir, tmp_path):
    """--avatar-dir-mb: once the folder outgrows it, the least recently used face goes."""
    import cv2

    srv = start_server(bundle_dir, tmp_path / "avatars", "--avatar-dir-mb", "0.5")
    try:
        image = cv2.imread(str(FACE_IMAGE))
        ids = []
        for k in range(3):
            png = cv2.imencode(".png", cv2.flip(image, 1) if k == 1 else np.roll(image, k, axis=1))[1].tobytes()
            status, body = call(srv, "POST", "/api/avatars", files={"face": (f"face{k}.png", png)})
            assert status == 201, body
            ids.append(body["id"])
        listed = [a["id"] for a in call(srv, "GET", "/api/avatars")[1]["avatars"]]
        assert listed == ids[-1:], listed  # each face is over 0.5 MB: only the newest is kept
        assert sorted(p.name for p in srv.avatar_dir.iterdir() if not p.name.startswith(".")) == ids[-1:]
    finally:
        srv.stop()


# -- who may call --------------------------------------------------------------------------------------

def test_forged_host_and_foreign_origins_are_refused(strict, avatar):
    port = strict.host_port[1]
    one_line_error(*call(strict, "GET", "/api/health", headers={"Host": f"evil.example:{port}"}), 403, "host name")
    one_line_error(*call(strict, "GET", "/", headers={"Host": "rebound.attacker.test"}), 403)
    foreign = {"Origin": "https://evil.example"}
    one_line_error(*call(strict, "POST", "/api/jobs", fields={"avatar": avatar}, headers=foreign,
                         files={"audio": ("speech.wav", speech_bytes(0.5))}), 403, "evil.example")
    one_line_error(*call(strict, "GET", "/api/avatars", headers={"Origin": "null"}), 403)
    own = {"Origin": f"http://127.0.0.1:{port}"}
    assert call(strict, "GET", "/api/avatars", headers=own)[0] == 200
    assert call(strict, "GET", "/api/health", headers={"Host": f"localhost:{port}"})[0] == 200

    async def handshake(headers):
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(ws_url(strict, avatar), headers=headers) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
    assert asyncio.run(handshake(foreign)) == 403
    assert asyncio.run(handshake({"Host": "evil.example"})) == 403
    assert asyncio.run(handshake(own)) == 101


def test_an_allowed_origin_gets_cors(strict):
    async def go():
        async with aiohttp.ClientSession() as session:
            origin = {"Origin": "http://localhost:3000"}
            async with session.options(strict.url + "api/jobs", headers={
                    **origin, "Access-Control-Request-Method": "POST"}) as preflight:
                allowed = preflight.status, preflight.headers.get("Access-Control-Allow-Origin")
            async with session.get(strict.url + "api/health", headers=origin) as response:
                return allowed, (response.status, response.headers.get("Access-Control-Allow-Origin"))
    preflight, simple = asyncio.run(go())
    assert preflight == (204, "http://localhost:3000") and simple == (200, "http://localhost:3000")


# -- small fixes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("channels", 2.0), ("channels", True), ("sample_rate", 16000.0),
                                         ("format", ["f32le"])])
def test_live_start_values_of_the_wrong_type_are_refused(strict, avatar, field, value):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(strict, avatar)) as ws:
                await ws.send_str(json.dumps({**START, field: value}))
                return json.loads((await ws.receive(timeout=30)).data)
    message = asyncio.run(go())
    assert message["type"] == "error" and field in message["message"], message


def _raw_request(server, head: str, body: bytes, then_wait: float) -> tuple[bytes, float]:
    """Send a request's head and the start of its body, then read the answer that comes within
    ``then_wait``: (its bytes, seconds until it came)."""
    host, port = server.host_port
    with socket.create_connection((host, port), timeout=then_wait) as sock:
        sock.sendall(head.encode() + body)
        started = time.monotonic()
        answer, waited = b"", None
        try:
            while chunk := sock.recv(65536):
                waited = waited or time.monotonic() - started
                answer += chunk
                if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                    break
        except socket.timeout:
            pass
    return answer, waited


def test_a_long_text_field_is_refused_before_it_is_read_whole(strict):
    """A 'refs' field that claims 100 MB: refused once 1 KB is past, without waiting for the rest."""
    boundary = "x" * 16
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"refs\"\r\n\r\n".encode() + b"9" * 4096
    host, port = strict.host_port
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary="
            f"{boundary}\r\nContent-Length: {100 * 2**20}\r\n\r\n")
    answer, waited = _raw_request(strict, head, body, then_wait=IDLE_S + 5)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert waited < IDLE_S  # not the idle limit: the server did not wait for the rest
    assert b"longer than 1024 bytes" in answer


def test_a_stalled_upload_is_let_go(strict):
    boundary = "y" * 16
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"face\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG" + b"\0" * 1000
    host, port = strict.host_port
    head = (f"POST /api/avatars HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary="
            f"{boundary}\r\nContent-Length: {2**20}\r\n\r\n")
    answer, waited = _raw_request(strict, head, body, then_wait=IDLE_S + 8)
    assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer, answer[:200]
    assert IDLE_S - 0.5 < waited < IDLE_S + 4
    assert not [p for p in strict.avatar_dir.rglob(".upload-*")]


def test_ipv6_loopback_binds(bundle_dir, tmp_path):
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    srv = start_server(bundle_dir, tmp_path / "avatars", "--host", "::1")
    try:
        assert srv.url.startswith("http://[::1]:")
        assert call(srv, "GET", "/api/health")[0] == 200
    finally:
        srv.stop()


def test_meta_is_written_atomically(tmp_path, monkeypatch):
    from iplap.serve import store

    meta = tmp_path / "meta.json"
    meta.write_text('{"state": "ready"}')

    def broken(self, text):
        with open(self, "w") as f:
            f.write(text[:3])
        raise OSError("disk full")
    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(OSError):
        store._write_atomically(meta, '{"state": "ready", "more": 1}')
    monkeypatch.undo()
    assert json.loads(meta.read_text()) == {"state": "ready"}


def _work_folders(avatar_dir: Path) -> list[Path]:
    return sorted(avatar_dir.glob(".iplap-serve-*"))


def test_stop_and_crash_leave_nothing_behind(bundle_dir, tmp_path):
    """SIGTERM during a face preparation: the preparation stops, the server exits within
    seconds and removes its work folder. A server killed outright leaves its folder, which the
    next server on that folder removes (a running server's folder is never touched)."""
    from iplap.samples.clip import head_motion_frames, write_clip

    avatars = tmp_path / "avatars"
    first = start_server(bundle_dir, avatars)
    clip = write_clip(tmp_path / "clip.mp4", head_motion_frames(12.0, size=128, seed=9))
    status, body = call(first, "POST", "/api/avatars", files={"face": ("clip.mp4", clip.read_bytes())})
    assert status == 202, body
    wait_for(first, f"/api/avatars/{body['id']}", lambda b: b["frames_done"] > 0)
    started = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(timeout=60)
    assert time.monotonic() - started < 15
    assert _work_folders(avatars) == [] and not (avatars / body["id"]).exists()

    crashed = start_server(bundle_dir, avatars)
    assert len(_work_folders(avatars)) == 1
    crashed.process.kill()
    crashed.process.wait()
    stale = _work_folders(avatars)
    assert len(stale) == 1  # left behind by the crash
    running = start_server(bundle_dir, avatars)
    try:
        mine = _work_folders(avatars)
        assert len(mine) == 1 and mine != stale
        neighbour = start_server(bundle_dir, avatars)
        try:
            assert mine[0] in _work_folders(avatars) and len(_work_folders(avatars)) == 2
        finally:
            neighbour.stop()
    finally:
        running.stop()
    assert _work_folders(avatars) == []
    assert os.path.isdir(avatars)


# -- fuzz: the whole surface, bounded in count and time ----------------------------------------------------

FUZZ_SEED, FUZZ_SECONDS = 20261201, 90.0


def _junk(rng, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


def _fuzz_forms(rng, avatar: str) -> list[tuple[str, str, dict, dict]]:
    """(method, path, fields, files) of malformed or hostile form requests."""
    heads = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\0\0\0\x20ftypisom", b"RIFF\0\0\0\0WAVEfmt ",
             b"GIF89a", b"ID3\x04", b"OggS", b"fLaC", b"RIFF\0\0\0\0WEBPVP8 "]
    refs = ["-1", "0", "101", "1e3", "abc", "", "\u0663", "2.5", "9" * 40, "null"]
    cases = []
    for _ in range(60):
        media = rng.choice(heads) + _junk(rng, rng.choice((0, 1, 64, 4096, 40000)))
        name = rng.choice(["a.png", "b.mp4", "../../etc/passwd", "x" * 300, "\u00e9t\u00e9.wav", "", "c.jpg"])
        kind = rng.randrange(4)
        if kind == 0:
            cases.append(("POST", "/api/avatars", {}, {"face": (name, media)}))
        elif kind == 1:
            cases.append(("POST", "/api/jobs", {"avatar": rng.choice([avatar, "nope", "", "'; drop"]),
                                                "refs": rng.choice(refs)}, {"audio": (name, media)}))
        elif kind == 2:
            cases.append(("POST", rng.choice(["/api/avatars", "/api/jobs"]),
                          {rng.choice(["face", "audio", "other", "avatar"]): rng.choice(refs)}, {}))
        else:
            cases.append(("POST", "/api/jobs", {"avatar": avatar}, {"other": (name, media)}))
    return cases


def _fuzz_paths(rng) -> list[tuple[str, str]]:
    paths = ["/api/avatars/%00", "/api/jobs/../../etc/passwd", "/static/..%2f..%2fapp.py", "/static/.hidden.js",
             "/api/" + "a" * 5000, "/api/jobs/x/video", "/api/avatars/" + "f" * 64, "/api/live", "/api/nothing",
             "/static/app.js%00.png"]
    return [(rng.choice(["GET", "DELETE", "PUT", "PATCH", "POST"]), rng.choice(paths)) for _ in range(40)]


async def _fuzz_http(server, rng, avatar: str, statuses: dict, deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        requests = [(m, p, None, None, None) for m, p in _fuzz_paths(rng)]
        requests += [(m, p, fields, files, None) for m, p, fields, files in _fuzz_forms(rng, avatar)]
        for content_type in ("application/json", "text/plain", "multipart/form-data", "multipart/form-data; "
                             "boundary=zz", "application/x-www-form-urlencoded", "image/png"):
            requests.append(("POST", rng.choice(["/api/avatars", "/api/jobs"]), None, None,
                             (content_type, _junk(rng, rng.choice((0, 10, 3000))))))
        rng.shuffle(requests)
        for method, path, fields, files, raw in requests:
            if time.monotonic() > deadline:
                break
            data, headers = None, {}
            if fields is not None or files is not None:
                data = aiohttp.FormData()
                for name, value in (fields or {}).items():
                    data.add_field(name, value)
                for name, (filename, content) in (files or {}).items():
                    data.add_field(name, content, filename=filename or "upload")
            elif raw is not None:
                headers["Content-Type"], data = raw
            async with session.request(method, server.url.rstrip("/") + path, data=data, headers=headers) as r:
                body = await r.read()
                _check_answer(server, r.status, body, f"{method} {path[:60]}")
                statuses[r.status] = statuses.get(r.status, 0) + 1


def _check_answer(server, status: int, body: bytes, what: str) -> None:
    if status < 400:
        return
    assert status != 500, (what, body, server.log_tail())  # a 500 is a bug
    data = json.loads(body)
    assert set(data) == {"error"} and "\n" not in data["error"], (what, body)
    text = body.decode(errors="replace")
    assert "Traceback" not in text and str(server.avatar_dir) not in text and "/tmp/" not in text \
        and ".upload-" not in text, (what, body)


def _bad_starts(rng) -> list:
    values = {"sample_rate": ["16000", 16000.5, True, None, -1, 10**12, [], {}, 7999, 192001],
              "channels": [0, 3, 2.0, True, "2", None, [], -1],
              "format": [1, "F32LE", None, "", "f64le", {}],
              "type": [None, "START", 1, "end", ""]}
    starts = []
    for field, options in values.items():
        for value in options:
            starts.append(json.dumps({**START, field: value}))
    starts += ["[]", "null", "\"start\"", "{", json.dumps({"type": "start"}), "x" * 10000]
    rng.shuffle(starts)
    return starts


async def _fuzz_live(server, rng, avatar: str, statuses: dict, deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        openings = [("text", start) for start in _bad_starts(rng)]
        openings += [("binary", _junk(rng, rng.choice((1, 4, 1000)))) for _ in range(5)]
        openings += [("after", json.dumps(START))] * 3
        for kind, payload in openings:
            if time.monotonic() > deadline:
                break
            async with session.ws_connect(ws_url(server, avatar)) as ws:
                if kind == "binary":
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload)
                if kind == "after":  # a good start, then something wrong
                    await ws.receive(timeout=30)
                    wrong = rng.choice([b"\0" * 3, "{\"type\": 5}", "end"])
                    await (ws.send_bytes(wrong) if isinstance(wrong, bytes) else ws.send_str(wrong))
                message = await ws.receive(timeout=30)
                while message.type == aiohttp.WSMsgType.BINARY:
                    message = await ws.receive(timeout=30)
                assert message.type == aiohttp.WSMsgType.TEXT, (kind, payload[:60], message)
                data = json.loads(message.data)
                assert data["type"] == "error" and "\n" not in data["message"], (kind, payload[:60], data)
                assert "Traceback" not in data["message"] and "/tmp/" not in data["message"]
                statuses["ws error"] = statuses.get("ws error", 0) + 1


def _fuzz_vanishing(server, rng, avatar: str, statuses: dict) -> None:
    """Clients that send half a request, half an upload or half a frame, and go."""
    host, port = server.host_port
    boundary = "b" * 20
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"face\"; filename=\"a.mp4\"\r\n\r\n"
            .encode() + _junk(rng, 5000))
    for k in range(12):
        with socket.create_connection((host, port), timeout=5) as sock:
            if k % 3 == 0:
                sock.sendall(f"POST /api/avatars HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-"
                             f"data; boundary={boundary}\r\nContent-Length: 900000\r\n\r\n".encode() + part)
            elif k % 3 == 1:
                sock.sendall(_junk(rng, 300) + b"\r\n\r\n")
            else:
                sock.sendall(f"GET /api/live?avatar={avatar} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())
        statuses["vanished"] = statuses.get("vanished", 0) + 1
    for _ in range(4):
        _vanish_mid_frame(server, avatar)
        statuses["vanished"] += 1


def test_fuzz_the_whole_surface(strict, avatar):
    """Malformed and hostile requests of every kind, seeded and bounded: every answer is a 4xx or
    503 with one line of JSON (no traceback, no server path), the server stays up, and
    afterwards every slot is free and its memory is back within 10 % of its start."""
    import random

    rng = random.Random(FUZZ_SEED)
    wait_all_free(strict)
    asyncio.run(_session(ws_url(strict, avatar), "close"))  # warm
    before = _rss_mb(strict.process.pid)
    statuses: dict = {}
    deadline = time.monotonic() + FUZZ_SECONDS
    asyncio.run(_fuzz_http(strict, rng, avatar, statuses, deadline))
    asyncio.run(_fuzz_live(strict, rng, avatar, statuses, deadline))
    _fuzz_vanishing(strict, rng, avatar, statuses)
    assert strict.process.poll() is None  # still up
    body = wait_all_free(strict)
    after = _rss_mb(strict.process.pid)
    print(f"fuzz: {sum(statuses.values())} requests, answers {dict(sorted(statuses.items(), key=str))}; slots "
          f"{body['slots']}; RSS {before:.0f} -> {after:.0f} MB")
    assert body["slots"]["free"] == body["slots"]["total"] and body["live_sessions"] == 0
    assert after < before * 1.10, (before, after)
    assert not [p for p in strict.avatar_dir.rglob(".upload-*")]
    assert sum(statuses.values()) >= 150


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_killed_under_load_and_restarted(bundle_dir, tmp_path):
    """kill -9 while a video is prepared and jobs render: after a restart the ready face is
    listed and renders, the half-prepared one is not served, and the dead server's work
    folder is gone."""
    from iplap.samples.clip import head_motion_frames, write_clip

    avatars = tmp_path / "avatars"
    first = start_server(bundle_dir, avatars)
    status, photo = call(first, "POST", "/api/avatars", files={"face": ("astronaut.png", FACE_IMAGE.read_bytes())})
    assert status == 201, photo
    clip = write_clip(tmp_path / "clip.mp4", head_motion_frames(8.0, size=128, seed=11))
    status, video = call(first, "POST", "/api/avatars", files={"face": ("clip.mp4", clip.read_bytes())})
    assert status == 202
    for _ in range(2):
        assert call(first, "POST", "/api/jobs", fields={"avatar": photo["id"]},
                    files={"audio": ("speech.wav", speech_bytes(2.0))})[0] == 202
    wait_for(first, f"/api/avatars/{video['id']}", lambda b: b["frames_done"] > 0)
    first.process.kill()
    first.process.wait()
    again = start_server(bundle_dir, avatars)
    try:
        listing = call(again, "GET", "/api/avatars")[1]["avatars"]
        assert [(a["id"], a["state"]) for a in listing] == [(photo["id"], "ready")]
        one_line_error(*call(again, "GET", f"/api/avatars/{video['id']}"), 404)
        assert call(again, "GET", "/api/jobs")[1]["jobs"] == []
        assert len(_work_folders(avatars)) == 1
        status, job = call(again, "POST", "/api/jobs", fields={"avatar": photo["id"]},
                           files={"audio": ("speech.wav", speech_bytes(0.5))})
        assert status == 202
        final = wait_for(again, f"/api/jobs/{job['id']}", lambda b: b["state"] not in ("queued", "running"))
        assert final["state"] == "done", final
    finally:
        again.stop()
