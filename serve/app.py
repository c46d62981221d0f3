"""The HTTP and WebSocket API, and the page at ``/`` (aiohttp).

Routes (``API`` below lists them for the README): avatars (upload, list, get, delete), jobs
(submit, status, cancel, video), the live WebSocket, health, and the page's static files.
Every error is a JSON object ``{"error": "one line"}`` with a 4xx status (500 only for a
bug, whose details stay in the server's log). A client never names a server path: faces,
speech and videos are known by ids the server made.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import socket
from importlib import resources
from pathlib import Path

from aiohttp import web

from .. import BackendConfig, IplapError, Pipeline, PipelineConfig, __version__
from ..limits import check_keyframe_every, check_refs
from .config import ServeConfig
from .errors import ApiError, errors_middleware, json_response
from .guard import Guard
from .jobs import JobQueue
from .live import LiveLimits, OneShotSession, serve_live
from .live_continuous import ContinuousSession
from .media_checks import FaceLimits, check_face, check_speech
from .protocol import parse_mode
from .slots import Slots
from .store import AvatarStore
from .uploads import read_form

log = logging.getLogger(__name__)

STATIC = resources.files(__package__) / "static"
#: The service's work folder inside --avatar-dir (uploads, jobs); one per running server.
WORK_PREFIX = ".iplap-serve-"
LOCK = ".lock"

#: method, path, what it does: the README's table is made from this.
API = (
    ("GET", "/", "the web page"),
    ("GET", "/api/health", "status: version, bundle, slots, queue"),
    ("POST", "/api/avatars", "upload a face (multipart field `face`: a photo or a video) -> `{\"id\", \"state\"}`; "
                             "201 ready (photos), 202 preparing (videos), 200 known already"),
    ("GET", "/api/avatars", "list the faces: id, name, state, frames_done/frames_total while preparing"),
    ("GET", "/api/avatars/{id}", "one face"),
    ("DELETE", "/api/avatars/{id}", "forget a face"),
    ("POST", "/api/jobs", "render (multipart: `avatar` id, `audio` file, optional `refs`, `keyframe_every`) -> `{\"id\"}`; "
                          "429 when the queue is full"),
    ("GET", "/api/jobs", "list the jobs"),
    ("GET", "/api/jobs/{id}", "`{\"state\": queued|running|done|failed|cancelled, \"frames_done\", "
                              "\"frames_total\", \"fps\", \"error\"}`"),
    ("DELETE", "/api/jobs/{id}", "cancel a job (a finished one is removed with its video)"),
    ("GET", "/api/jobs/{id}/video", "the finished mp4"),
    ("WS", "/api/live?avatar={id}", "live session: PCM in, JPEG frames + their audio out (see below); "
                                    "`&mode=continuous`: an always-on avatar speaking in turns"),
)

CONFIG, PIPELINE, STORE, JOBS, SLOTS, UPLOADS, BACKGROUND, LIVE = (
    web.AppKey(name, object) for name in ("config", "pipeline", "store", "jobs", "slots", "uploads", "background",
                                          "live"))


async def _form(request: web.Request, file_fields: tuple[str, ...], text_fields: tuple[str, ...] = ()):
    """The request's multipart form, within the upload limits (size, idle and total time)."""
    config = request.app[CONFIG]
    try:
        return await asyncio.wait_for(read_form(request, request.app[UPLOADS], file_fields, text_fields,
                                                config.max_upload_bytes, config.idle_timeout_s),
                                      config.upload_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the upload took longer than {config.upload_timeout_s:g} s") from None


async def _in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -- avatars --------------------------------------------------------------------------------------

async def post_avatar(request: web.Request) -> web.Response:
    config, store, slots = request.app[CONFIG], request.app[STORE], request.app[SLOTS]
    form = await _form(request, ("face",))
    try:
        upload = form.files.get("face")
        if upload is None:
            raise ApiError(400, "no file in the multipart field 'face'")
        photo = await _in_thread(check_face, upload.path, upload.filename,
                                 FaceLimits(config.max_face_frames, config.max_face_pixels))
        slots.check_room()  # then, with no await between, add and admit
        record, new = store.add(upload.path, upload.sha256, upload.size, upload.filename, upload.suffix, photo)
    finally:
        form.discard()
    if not new:
        return json_response(record.public(), 200)
    slots.admit()
    if photo:  # quick: answer with the outcome
        try:
            await slots.run(store.prepare, record.id, admitted=True)
        except ApiError:
            store.discard(record.id)  # failed or stopped: the 422 or 503 is what the client hears
            raise
        return json_response(record.public(), 201)
    task = asyncio.get_running_loop().create_task(_prepare_in_background(slots, store, record.id))
    request.app[BACKGROUND].add(task)
    task.add_done_callback(request.app[BACKGROUND].discard)
    return json_response(record.public(), 202)


async def _prepare_in_background(slots: Slots, store: AvatarStore, avatar_id: str) -> None:
    try:
        await slots.run(store.prepare, avatar_id, admitted=True)
    except ApiError:
        pass  # the record says how it went


async def list_avatars(request: web.Request) -> web.Response:
    return json_response({"avatars": [r.public() for r in request.app[STORE].list()]})


async def get_avatar(request: web.Request) -> web.Response:
    return json_response(request.app[STORE].get(request.match_info["id"]).public())


async def delete_avatar(request: web.Request) -> web.Response:
    request.app[STORE].delete(request.match_info["id"])
    return json_response({"deleted": request.match_info["id"]})


# -- jobs ---------------------------------------------------------------------------------------------

async def post_job(request: web.Request) -> web.Response:
    config, jobs = request.app[CONFIG], request.app[JOBS]
    form = await _form(request, ("audio",), ("avatar", "refs", "keyframe_every"))
    try:
        avatar = form.fields.get("avatar")
        if not avatar:
            raise ApiError(400, "no avatar id in the field 'avatar'")
        refs = parse_refs(form.fields.get("refs"), config.refs)
        every = _parse_whole(form.fields.get("keyframe_every"), 1, check_keyframe_every)
        upload = form.files.get("audio")
        if upload is None:
            raise ApiError(400, "no file in the multipart field 'audio'")
        jobs.check_room(avatar)  # before decoding: a full queue answers at once
        await _in_thread(check_speech, upload.path, upload.filename, config.max_speech_seconds)
        job = jobs.submit(avatar, upload.path, upload.suffix, refs, keyframe_every=every)
    finally:
        form.discard()
    return json_response(job.public(), 202)


def parse_refs(value: str | None, default: int) -> int:
    return _parse_whole(value, default, check_refs)


def _parse_whole(value: str | None, default: int, check) -> int:
    """A form field's whole number, ``default`` where it is not given, checked by ``check``
    (one of :mod:`iplap.limits`' checks, whose message a 400 carries)."""
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        number = value[:20]  # not a number: the check says what it must be
    try:
        return check(number)
    except IplapError as exc:
        raise ApiError(400, exc.message) from None


async def list_jobs(request: web.Request) -> web.Response:
    return json_response({"jobs": [job.public() for job in request.app[JOBS].list()]})


async def get_job(request: web.Request) -> web.Response:
    return json_response(request.app[JOBS].get(request.match_info["id"]).public())


async def delete_job(request: web.Request) -> web.Response:
    return json_response(request.app[JOBS].delete(request.match_info["id"]).public())


async def job_video(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["id"]
    path = request.app[JOBS].video(job_id)
    return web.FileResponse(path, headers={"Content-Type": "video/mp4",
                                           "Content-Disposition": f'attachment; filename="iplap-{job_id}.mp4"'})


# -- live ------------------------------------------------------------------------------------------------

async def live(request: web.Request) -> web.StreamResponse:
    config, store = request.app[CONFIG], request.app[STORE]
    avatar_id = request.query.get("avatar")
    if not avatar_id:
        raise ApiError(400, "say which face: /api/live?avatar=ID")
    store.ready(avatar_id)
    refs = parse_refs(request.query.get("refs"), config.refs)
    mode = ContinuousSession if parse_mode(request.query.get("mode")) == "continuous" else OneShotSession
    return await serve_live(request, request.app[PIPELINE], lambda: store.load(avatar_id, refs), request.app[SLOTS],
                            LiveLimits.of(config), request.app[LIVE], mode)


# -- health and the page -------------------------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    config, pipeline, jobs, slots = request.app[CONFIG], request.app[PIPELINE], request.app[JOBS], request.app[SLOTS]
    return json_response({"status": "ok", "version": __version__,
                          "bundle": {"id": pipeline.bundle.bundle_id[:16], "precision": pipeline.bundle.precision},
                          "backend": config.backend, "refs": config.refs, "token": config.token is not None,
                          "slots": slots.public(), "live_sessions": len(request.app[LIVE]),
                          "jobs": {"queued": jobs.waiting, "running": jobs.running, "max_queue": jobs.max_queue},
                          "max_upload_mb": config.max_upload_mb})


async def page(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}
    resource = STATIC / name
    if "/" in name or name.startswith(".") or Path(name).suffix not in types or not resource.is_file():
        raise ApiError(404, f"not found: {request.path}")
    return web.Response(body=resource.read_bytes(), content_type=types[Path(name).suffix])


# -- the application -----------------------------------------------------------------------------------

def _work_folder(parent: Path) -> tuple[Path, int]:
    """A work folder of this server's, locked for as long as it runs; the folders of servers
    that died (their lock is free) are removed first. (folder, lock file descriptor)."""
    for old in parent.glob(WORK_PREFIX + "*"):
        try:
            fd = os.open(old / LOCK, os.O_RDWR)
        except OSError:
            fd = None  # a folder without a lock (an older version, or half made): stale
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running server's
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed the work folder of a server that stopped: %s", old.name)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=parent))
    fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return work, fd


def create_app(config: ServeConfig, pipeline: Pipeline | None = None) -> web.Application:
    """The aiohttp application for ``config`` (the pipeline is made from the bundle unless given)."""
    if pipeline is None:
        backend = BackendConfig(config.backend, device=config.device, threads=config.render_threads,
                                streams=config.streams)
        pipeline = Pipeline(config.bundle, PipelineConfig(backend=backend, refs=config.refs))
    # Other bodies than uploads are small JSON; uploads are streamed, with their own limit.
    app = web.Application(middlewares=[errors_middleware, Guard(config).middleware], client_max_size=2**20)
    folder = config.avatar_folder
    folder.mkdir(parents=True, exist_ok=True)
    work, lock = _work_folder(folder)
    app[CONFIG], app[PIPELINE] = config, pipeline
    app[UPLOADS] = work / "uploads"
    app[UPLOADS].mkdir()
    app[STORE] = AvatarStore(folder, pipeline, config.avatar_dir_bytes)
    app[BACKGROUND], app[LIVE] = set(), set()

    async def start(app):
        app[SLOTS] = Slots(config.max_sessions, config.max_queue)
        app[JOBS] = JobQueue(pipeline, app[STORE], app[SLOTS], work / "jobs", config.keep_jobs)

    async def shutdown(app):
        """Stop every render at its next frame: preparations, jobs, live sessions."""
        app[STORE].closing = True
        await app[JOBS].close()
        for session in list(app[LIVE]):
            session.abort("the service is shutting down")
        for task in list(app[BACKGROUND]):
            task.cancel()

    async def stop(app):
        app[SLOTS].shutdown()
        shutil.rmtree(work, ignore_errors=True)
        os.close(lock)

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(stop)
    _routes(app)
    return app


def _routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/api/health", health)
    app.router.add_post("/api/avatars", post_avatar)
    app.router.add_get("/api/avatars", list_avatars)
    app.router.add_get("/api/avatars/{id}", get_avatar)
    app.router.add_delete("/api/avatars/{id}", delete_avatar)
    app.router.add_post("/api/jobs", post_job)
    app.router.add_get("/api/jobs", list_jobs)
    app.router.add_get("/api/jobs/{id}", get_job)
    app.router.add_delete("/api/jobs/{id}", delete_job)
    app.router.add_get("/api/jobs/{id}/video", job_video)
    app.router.add_get("/api/live", live)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host`` (an IPv6 address such as ``::1`` too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise IplapError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run_server(config: ServeConfig, announce=print) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); ``announce`` gets the URL once the port is open."""
    app = create_app(config)

    async def main():
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:  # our own socket: with port 0 the system picks one, and we can say which
            sock = listen(config.host, config.port)
        except IplapError:
            await runner.cleanup()
            raise
        await web.SockSite(runner, sock).start()
        port = sock.getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        announce(f"iplap serve: http://{host}:{port}/")
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
