"""The continuous live mode (``/api/live?avatar=ID&mode=continuous``) against a real server on
loopback: idle frames from ``ready`` on, speech in turns with their playback events, interrupts,
the closing message, the limits, and one slot per session freed however it ends."""

from __future__ import annotations

import asyncio
import io
import json
import math
import time

import numpy as np
import pytest
import soundfile

aiohttp = pytest.importorskip("aiohttp", reason="the serve tests need the serve extra (aiohttp)")

from iplap.samples import FACE_IMAGE  # noqa: E402
from serveutil import RawWebSocket, parse_frame, start_server  # noqa: E402
from test_serve import call, speech_bytes  # noqa: E402
from test_serve_faults import wait_all_free  # noqa: E402

IDLE_S, LIVE_S, QUEUE_S = 2, 7, 3
START = {"type": "start", "sample_rate": 16000, "channels": 1, "format": "f32le"}


@pytest.fixture(scope="module")
def strict(bundle_dir, tmp_path_factory):
    """A server with small limits: 2 s idle, 7 s per live session, 3 s of queued speech;
    two renders in flight per session (``--streams 2``: the same frames, rendered two at a time)."""
    srv = start_server(bundle_dir, tmp_path_factory.mktemp("continuous-avatars"), "--idle-timeout-s", str(IDLE_S),
                       "--live-timeout-s", str(LIVE_S), "--live-queue-s", str(QUEUE_S), "--streams", "2")
    yield srv
    srv.stop()


def _photo_avatar(server) -> str:
    status, body = call(server, "POST", "/api/avatars", files={"face": ("astronaut.png", FACE_IMAGE.read_bytes())})
    assert status in (200, 201), body
    return body["id"]


@pytest.fixture(scope="module")
def avatar(server):
    return _photo_avatar(server)


@pytest.fixture(scope="module")
def strict_avatar(strict):
    return _photo_avatar(strict)


def speech(seconds: float, fmt: str = "f32le") -> bytes:
    mono = soundfile.read(io.BytesIO(speech_bytes(seconds)), dtype="float32")[0]
    if fmt == "s16le":
        return (mono * 20000).astype("<i2").tobytes()
    return mono.astype("<f4").tobytes()


def decode(jpeg: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)


def photo() -> np.ndarray:
    import cv2

    return cv2.imread(str(FACE_IMAGE)).astype(np.int16)


class Client:
    """A continuous session's client that keeps every message it gets, in order, with the time
    it came: ``("text", dict, t)`` or ``("frame", (header, jpeg, audio), t)``."""

    def __init__(self, ws):
        self.ws = ws
        self.timeline: list[tuple[str, object, float]] = []

    @property
    def frames(self) -> list[tuple[dict, bytes, bytes]]:
        return [item for kind, item, _ in self.timeline if kind == "frame"]

    @property
    def texts(self) -> list[dict]:
        return [item for kind, item, _ in self.timeline if kind == "text"]

    async def next(self, timeout: float = 60.0):
        message = await self.ws.receive(timeout=timeout)
        if message.type == aiohttp.WSMsgType.TEXT:
            entry = ("text", json.loads(message.data), time.monotonic())
        elif message.type == aiohttp.WSMsgType.BINARY:
            entry = ("frame", parse_frame(message.data), time.monotonic())
        else:
            return None  # closed
        self.timeline.append(entry)
        return entry

    async def until(self, done, timeout: float = 90.0):
        """Read until ``done(kind, item)``; that entry."""
        deadline = time.monotonic() + timeout
        while True:
            entry = await self.next(max(0.1, deadline - time.monotonic()))
            assert entry is not None, f"closed before expected: {self.texts[-3:]}"
            if done(entry[0], entry[1]):
                return entry

    async def frames_of(self, n: int) -> None:
        count = len(self.frames) + n
        await self.until(lambda kind, _: kind == "frame" and len(self.frames) >= count)

    async def rest(self, timeout: float = 60.0) -> None:
        while await self.next(timeout) is not None:
            pass


def is_text(kind_wanted: str, **fields):
    return lambda kind, item: kind == "text" and item["type"] == kind_wanted and \
        all(item.get(k) == v for k, v in fields.items())


def ws_url(server, avatar: str, mode: str = "continuous") -> str:
    return server.url.replace("http", "ws", 1).rstrip("/") + f"/api/live?avatar={avatar}&mode={mode}"


async def _connect(server, avatar: str, body, start: dict = START):
    """Open a continuous session, check its ``ready``, run ``body(client)``; the client."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(server, avatar), max_msg_size=0) as ws:
            client = Client(ws)
            await ws.send_str(json.dumps(start))
            kind, ready, _ = await client.next()
            assert kind == "text" and ready["type"] == "ready" and ready["mode"] == "continuous", ready
            assert (ready["width"], ready["height"], ready["fps"]) == (512, 512, 25)
            await body(client)
            return client


def test_idle_frames_then_a_turn_with_its_events_and_the_summary(server, avatar):
    """The photo, idle, from ``ready`` on; a turn of int16 speech then plays: its start event
    just before its first frame, its frames speaking with exactly its samples (zero-padded to
    the last frame), its finish event and stats just after its last frame, then idle again;
    ``end`` closes with the session's numbers, and the slot is free."""
    pcm = speech(1.02, "s16le")
    samples = len(pcm) // 2

    async def body(client):
        await client.frames_of(8)  # idle before any speech
        for i in range(0, len(pcm), 6400):
            await client.ws.send_bytes(pcm[i:i + 6400])
        await client.ws.send_str(json.dumps({"type": "turn_end"}))
        await client.until(is_text("playback_finished"))
        await client.frames_of(5)
        await client.ws.send_str(json.dumps({"type": "end"}))
        await client.rest()

    client = asyncio.run(_connect(server, avatar, body, {**START, "format": "s16le"}))
    frames, texts = client.frames, client.texts
    assert [h["index"] for h, _, _ in frames] == list(range(len(frames)))  # every frame, in order
    idle = [f for f in frames[:8]]
    assert all(not h["speaking"] and h["turn"] is None and h["audio"] == 0 for h, _, _ in idle)
    first_idle = decode(idle[0][1])
    assert np.abs(first_idle - photo()).mean() < 4  # the photo itself (JPEG at quality 85)
    assert all(np.array_equal(decode(jpeg), first_idle) for _, jpeg, _ in idle)

    kinds = [(kind, item["type"] if kind == "text" else item[0]["speaking"]) for kind, item, _ in client.timeline]
    speaking = [f for f in frames if f[0]["speaking"]]
    start_at = kinds.index(("frame", True))
    assert kinds[start_at - 1] == ("text", "playback_started")
    stop_at = start_at + len(speaking)
    assert kinds[start_at:stop_at] == [("frame", True)] * len(speaking)  # one run of speaking frames
    assert kinds[stop_at:stop_at + 2] == [("text", "playback_finished"), ("text", "stats")]
    assert all(kind == ("frame", False) for kind in kinds[stop_at + 2:-1]) and kinds[-1] == ("text", "end")

    assert len(speaking) == math.ceil(samples * 25 / 16000) and {h["turn"] for h, _, _ in speaking} == {0}
    played = b"".join(audio for _, _, audio in speaking)
    assert played == pcm + bytes(len(played) - len(pcm))  # its own samples, then silence to the frame's end
    assert any(np.abs(decode(jpeg) - first_idle).max() > 10 for _, jpeg, _ in speaking)  # lips rendered

    started, finished, stats, end = (next(t for t in texts if t["type"] == kind)
                                     for kind in ("playback_started", "playback_finished", "stats", "end"))
    assert started["turn"] == 0 and started["latency_s"] > 0
    assert finished == {"type": "playback_finished", "turn": 0, "interrupted": False}
    assert stats["turns"] == 1 and stats["latencies_s"] == [started["latency_s"]]
    assert end["mode"] == "continuous" and end["frames"] == len(frames) and end["dropped_frames"] == 0
    assert (end["turns"], end["interrupted"], end["speaking_frames"]) == (1, 0, len(speaking))
    assert end["held_frames"] + end["stalls"] == sum(h["held"] for h, _, _ in speaking)
    assert end["latencies_s"] == [started["latency_s"]] and end["mean_latency_s"] == started["latency_s"]
    assert end["real_time_factor"] > 0 and end["k"] >= 1 and end["rendered"] >= 1 and end["queued_speech_s"] == 0
    print(f"continuous: latency {end['mean_latency_s']:.2f} s, RTF {end['real_time_factor']:.1f}, k {end['k']}, "
          f"{end['held_frames']} of {end['speaking_frames']} speaking frames held")
    assert wait_all_free(server)["slots"]["free"] == 2


def test_interrupt_cuts_the_reply_to_idle_within_two_frames_and_the_session_goes_on(server, avatar):
    """A 3 s reply interrupted after 8 of its frames: at most two more speaking frames come,
    the finish event says interrupted, then idle frames; the next turn plays to its end; then
    ``end``, and the slot is free."""
    cut = {}

    async def body(client):
        await client.ws.send_bytes(speech(3.0))
        await client.ws.send_str(json.dumps({"type": "turn_end"}))
        await client.until(lambda kind, item: kind == "frame" and
                           sum(h["speaking"] for h, _, _ in client.frames) >= 8)
        cut["at"], cut["entries"] = time.monotonic(), len(client.timeline)
        await client.ws.send_str(json.dumps({"type": "interrupt"}))
        _, _, cut["idle_at"] = await client.until(lambda kind, item: kind == "frame" and not item[0]["speaking"])
        await client.ws.send_bytes(speech(0.5))  # the next turn
        await client.ws.send_str(json.dumps({"type": "turn_end"}))
        await client.until(is_text("playback_finished", turn=1))
        await client.ws.send_str(json.dumps({"type": "end"}))
        await client.rest()

    client = asyncio.run(_connect(server, avatar, body))
    after = client.timeline[cut["entries"]:]
    first_idle = next(i for i, (kind, item, _) in enumerate(after) if kind == "frame" and not item[0]["speaking"])
    late = [item for kind, item, _ in after[:first_idle] if kind == "frame"]
    assert len(late) <= 2, [h for h, _, _ in late]  # the frame being decided, and one in flight
    assert {"type": "playback_finished", "turn": 0, "interrupted": True} in \
        [item for kind, item, _ in after[:first_idle] if kind == "text"]
    waited = cut["idle_at"] - cut["at"]
    assert waited < 0.5, waited
    second = [h for h, _, _ in client.frames if h["turn"] == 1]
    assert len(second) == math.ceil(0.5 * 25)
    end = client.texts[-1]
    assert end["type"] == "end" and (end["turns"], end["interrupted"]) == (1, 1) and len(end["latencies_s"]) == 2
    print(f"continuous interrupt: idle {waited * 1000:.0f} ms after the interrupt was sent, {len(late)} late frames")
    assert wait_all_free(server)["slots"]["free"] == 2


def test_a_slow_continuous_client_loses_pictures_within_the_bound(server, avatar):
    """A client with a 4 KB receive buffer that reads nothing for 2 s (50 frames): at most 3
    frames wait for it (--live-pending-frames 3), older pictures are dropped, and ``end``
    still gets its closing message with the count."""
    host, port = server.host_port
    client = RawWebSocket(host, port, f"/api/live?avatar={avatar}&mode=continuous")
    client.send(json.dumps(START))
    time.sleep(2.0)
    client.send(json.dumps({"type": "end"}))
    messages = client.receive_all()
    client.close()
    texts = [json.loads(d) for op, d in messages if op == 1]
    end = texts[-1]
    assert texts[0]["type"] == "ready" and end["type"] == "end", texts
    frames = [parse_frame(d)[0] for op, d in messages if op == 2]
    assert end["dropped_frames"] > 0 and end["max_pending_frames"] <= 3 and end["frames"] == len(frames)
    assert end["frames"] + end["dropped_frames"] >= 40  # the clock went on meanwhile
    assert wait_all_free(server)["slots"]["free"] == 2


async def _ends(server, avatar: str, how: str) -> list[dict]:
    """A continuous session ended ``how``; the text messages after ``ready``."""
    async def body(client):
        await client.frames_of(3)
        if how == "close":
            await client.ws.close()
            return
        if how == "end":
            await client.ws.send_str(json.dumps({"type": "end"}))
        elif how == "quiet":  # idle frames past the idle limit, then the wall-clock limit ends it
            started = time.monotonic()
            await client.until(lambda kind, item: time.monotonic() - started > IDLE_S + 1)
            assert [t["type"] for t in client.texts] == ["ready"], client.texts  # no idle error after start
        elif how == "queue":
            for _ in range(QUEUE_S + 2):
                await client.ws.send_bytes(speech(1.0, "s16le"))  # one turn, faster than it plays
        else:  # a bad message
            await (client.ws.send_bytes if isinstance(how, bytes) else client.ws.send_str)(how)
        await client.rest()

    client = await _connect(server, avatar, body, {**START, "format": "s16le"})
    return client.texts[1:]


@pytest.mark.slow  # a server of its own and eight sessions: keeps the default run under 15 minutes
@pytest.mark.parametrize("how,words", [
    ("close", None),
    ("end", None),
    ("queue", "wait to play"),
    ("{\"type\": \"pause\"}", "in continuous mode"),
    ("not json", "in continuous mode"),
    (json.dumps(START), "in continuous mode"),
    (b"\x00" * 5, "whole sample frames"),
    ("quiet", "time limit"),
])
def test_every_way_a_continuous_session_ends_frees_its_slot(strict, strict_avatar, how, words):
    """Client close and ``end`` end it quietly (``end`` with the closing message); more speech
    queued than --live-queue-s, a bad message and the wall-clock limit end it with a one-line
    JSON error (but the idle limit does not: a quiet session is fine); the slot is free after each."""
    started = time.monotonic()
    texts = asyncio.run(_ends(strict, strict_avatar, how))
    if how == "close":
        assert texts == []
    elif how == "end":
        assert [t["type"] for t in texts] == ["end"] and texts[0]["turns"] == 0 and texts[0]["frames"] >= 3
    else:
        assert texts and texts[-1]["type"] == "error" and words in texts[-1]["message"], texts
        assert set(texts[-1]) == {"type", "message"} and "\n" not in texts[-1]["message"]
    if how == "queue":  # the chunk that would pass the limit is the one refused
        queued = float(texts[-1]["message"].split(" s ")[0])
        assert QUEUE_S < queued <= QUEUE_S + 1.01, texts[-1]
    if how == "quiet":
        assert LIVE_S - 1 < time.monotonic() - started < LIVE_S + 6
    body = wait_all_free(strict)
    assert body["slots"]["free"] == 2 and body["live_sessions"] == 0, (how, body)


def test_an_unknown_mode_is_refused(server, avatar):
    async def go():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(ws_url(server, avatar, mode="forever"))
            return caught.value.status
    assert asyncio.run(go()) == 400
