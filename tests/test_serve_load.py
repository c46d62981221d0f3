"""A bounded load test: 20 clients submit jobs at once to a server with --max-sessions 2."""

from __future__ import annotations

import asyncio
import time

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the serve tests need the serve extra (aiohttp)")

from iplap.samples import FACE_IMAGE  # noqa: E402
from serveutil import start_server  # noqa: E402
from test_serve import speech_bytes  # noqa: E402

CLIENTS, MAX_SESSIONS, MAX_QUEUE = 20, 2, 8


async def _wave(url: str, avatar: str, audio: bytes) -> tuple[dict[str, str], int]:
    """20 clients at once: each submits a job and follows it to its end; (id -> final state, 429s)."""
    async with aiohttp.ClientSession() as session:
        async def client(k: int):
            form = aiohttp.FormData()
            form.add_field("avatar", avatar)
            form.add_field("audio", audio, filename=f"speech{k}.wav")
            async with session.post(url + "api/jobs", data=form) as response:
                body = await response.json()
                if response.status == 429:
                    assert set(body) == {"error"} and "queue is full" in body["error"]
                    return None
                assert response.status == 202, body
            while True:
                async with session.get(url + f"api/jobs/{body['id']}") as response:
                    job = await response.json()
                if job["state"] not in ("queued", "running"):
                    return job
                await asyncio.sleep(0.2)

        results = await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    jobs = {job["id"]: job["state"] for job in results if job is not None}
    return jobs, sum(1 for job in results if job is None)


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_twenty_clients_at_once(bundle_dir, tmp_path):
    """Every job ends done or is refused with 429; none is lost; the server's memory does not
    grow from one wave to the next."""
    server = start_server(bundle_dir, tmp_path / "avatars", "--max-sessions", str(MAX_SESSIONS), "--max-queue",
                          str(MAX_QUEUE))
    try:
        async def upload():
            async with aiohttp.ClientSession() as session:
                form = aiohttp.FormData()
                form.add_field("face", FACE_IMAGE.read_bytes(), filename="astronaut.png")
                async with session.post(server.url + "api/avatars", data=form) as response:
                    return (await response.json())["id"]
        avatar = asyncio.run(upload())
        audio = speech_bytes(0.3)
        figures = []
        for wave in range(2):
            start = time.perf_counter()
            jobs, refused = asyncio.run(_wave(server.url, avatar, audio))
            wall = time.perf_counter() - start
            assert set(jobs.values()) <= {"done"}, jobs
            # Every slot and every place in the queue is used before a client is refused.
            assert len(jobs) + refused == CLIENTS and len(jobs) >= MAX_SESSIONS + MAX_QUEUE
            figures.append((len(jobs), refused, wall, server.rss_mb(), server.peak_rss_mb()))
        for wave, (done, refused, wall, rss, peak) in enumerate(figures, 1):
            print(f"load wave {wave}: {done} jobs done, {refused} answered 429, {wall:.1f} s, "
                  f"RSS {rss:.0f} MB, peak {peak:.0f} MB")
        assert figures[1][3] - figures[0][3] < 150  # MB: no growth with the number of jobs served
    finally:
        server.stop()
