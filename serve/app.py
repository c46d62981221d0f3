"""The HTTP and WebSocket API, and the page at ``/`` (aiohttp).

Routes (``API`` below lists them for the README): avatars (upload, list, get, delete), jobs
(submit, status, cancel, video), the live WebSocket, health, and the page's static files.
Every error is a JSON object ``{"error": "one line"}`` with a 4xx status (500 only for a
bug, whose details stay in the server's log). A client never names a server path: faces,
speech and videos are known by ids the server made.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
import socket
import tempfile
from importlib import resources
from pathlib import Path

from aiohttp import web

from .. import BackendConfig, IplapError, Pipeline, PipelineConfig, __version__, load_speech
from .config import ServeConfig
from .errors import ApiError, from_iplap
from .jobs import JobQueue, Slots
from .live import serve_live
from .store import AvatarStore
from .uploads import read_form

log = logging.getLogger(__name__)

STATIC = resources.files(__package__) / "static"

#: method, path, what it does: the README's table is made from this.
API = (
    ("GET", "/", "the web page"),
    ("GET", "/api/health", "status: version, bundle, slots, queue"),
    ("POST", "/api/avatars", "upload a face (multipart field `face`: a photo or a video) -> `{\"id\", \"state\"}`; "
                             "201 ready (photos), 202 preparing (videos), 200 known already"),
    ("GET", "/api/avatars", "list the faces: id, name, state, frames_done/frames_total while preparing"),
    ("GET", "/api/avatars/{id}", "one face"),
    ("DELETE", "/api/avatars/{id}", "forget a face"),
    ("POST", "/api/jobs", "render (multipart: `avatar` id, `audio` file, optional `refs`) -> `{\"id\"}`; "
                          "429 when the queue is full"),
    ("GET", "/api/jobs", "list the jobs"),
    ("GET", "/api/jobs/{id}", "`{\"state\": queued|running|done|failed|cancelled, \"frames_done\", "
                              "\"frames_total\", \"fps\", \"error\"}`"),
    ("DELETE", "/api/jobs/{id}", "cancel a job (a finished one is removed with its video)"),
    ("GET", "/api/jobs/{id}/video", "the finished mp4"),
    ("WS", "/api/live?avatar={id}", "live session: PCM in, JPEG frames + their audio out (see below)"),
)

CONFIG, PIPELINE, STORE, JOBS, SLOTS, UPLOADS, BACKGROUND = (
    web.AppKey(name, object) for name in ("config", "pipeline", "store", "jobs", "slots", "uploads", "background"))


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, separators=(",", ":")))


def error_response(status: int, message: str) -> web.Response:
    return _json({"error": " ".join(str(message).split())}, status)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except IplapError as exc:
        return error_response(422, from_iplap(exc).message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: "not found", 405: "method not allowed", 413: "the request is too large"}.get(exc.status,
                                                                                                   exc.reason)
        return error_response(exc.status, f"{reason}: {request.method} {request.path}" if exc.status in (404, 405)
                              else reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # noqa: BLE001 - a bug: logged in full, answered in one line
        log.exception("error in %s %s", request.method, request.path)
        return error_response(500, "internal error (see the server's log)")


def auth_middleware(token: str | None):
    @web.middleware
    async def check(request: web.Request, handler):
        if token is None or not request.path.startswith("/api/") or request.method == "OPTIONS":
            return await handler(request)
        given = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):].strip()
        elif request.path == "/api/live":
            given = request.query.get("token", "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return error_response(401, "a valid token is needed: Authorization: Bearer TOKEN")
        return await handler(request)
    return check


# -- avatars --------------------------------------------------------------------------------------

async def post_avatar(request: web.Request) -> web.Response:
    config, store, slots = request.app[CONFIG], request.app[STORE], request.app[SLOTS]
    form = await read_form(request, request.app[UPLOADS], ("face",), (), config.max_upload_bytes)
    upload = form.files.get("face")
    if upload is None:
        raise ApiError(400, "no file in the multipart field 'face'")
    await asyncio.get_running_loop().run_in_executor(None, _check_face_media, upload.path)
    record, new = store.add(upload.path, upload.sha256, upload.size, upload.filename, upload.suffix)
    if not new:
        return _json(record.public(), 200)
    if record.kind == "image":  # quick: answer with the outcome
        await slots.run(store.prepare, record.id)
        if record.state == "failed":
            store.delete(record.id)
            raise ApiError(422, f"{upload.filename}: {record.error}")
        return _json(record.public(), 201)
    task = asyncio.get_running_loop().create_task(slots.run(store.prepare, record.id))
    request.app[BACKGROUND].add(task)
    task.add_done_callback(request.app[BACKGROUND].discard)
    return _json(record.public(), 202)


def _check_face_media(path: Path) -> None:
    """A photo OpenCV reads, or a file with a video stream PyAV opens: anything else is refused now."""
    import av
    import cv2

    if cv2.haveImageReader(str(path)):
        return
    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                return
    except (av.FFmpegError, OSError, ValueError):
        pass
    path.unlink(missing_ok=True)
    raise ApiError(422, "the face must be a photo or a video (this file is neither)")


async def list_avatars(request: web.Request) -> web.Response:
    return _json({"avatars": [r.public() for r in request.app[STORE].list()]})


async def get_avatar(request: web.Request) -> web.Response:
    return _json(request.app[STORE].get(request.match_info["id"]).public())


async def delete_avatar(request: web.Request) -> web.Response:
    request.app[STORE].delete(request.match_info["id"])
    return _json({"deleted": request.match_info["id"]})


# -- jobs ---------------------------------------------------------------------------------------------

async def post_job(request: web.Request) -> web.Response:
    config, jobs = request.app[CONFIG], request.app[JOBS]
    form = await read_form(request, request.app[UPLOADS], ("audio",), ("avatar", "refs"), config.max_upload_bytes)
    try:
        avatar = form.fields.get("avatar")
        if not avatar:
            raise ApiError(400, "no avatar id in the field 'avatar'")
        request.app[STORE].ready(avatar)
        refs = _refs(form.fields.get("refs"), config.refs)
        upload = form.files.get("audio")
        if upload is None:
            raise ApiError(400, "no file in the multipart field 'audio'")
        if jobs.waiting >= jobs.max_queue:  # before decoding: a full queue answers at once
            raise ApiError(429, f"the queue is full ({jobs.max_queue} jobs waiting); try again later")
        await asyncio.get_running_loop().run_in_executor(None, _check_speech, upload.path, upload.filename)
        job = jobs.submit(avatar, upload.path, upload.suffix, refs)
    finally:
        form.discard()
    return _json(job.public(), 202)


def _check_speech(path: Path, name: str) -> None:
    """Decode and check the uploaded speech now, so that a bad file is refused at once."""
    try:
        load_speech(path).check()
    except IplapError as exc:
        # The message names our temporary file; the client knows its file by its own name.
        raise ApiError(422, exc.message.replace(str(path), name).replace(path.name, name)) from None


def _refs(value: str | None, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        refs = int(value)
    except ValueError:
        raise ApiError(400, f"refs must be a whole number, got {value!r}") from None
    if not 1 <= refs <= 100:
        raise ApiError(400, f"refs must be between 1 and 100, got {refs}")
    return refs


async def list_jobs(request: web.Request) -> web.Response:
    return _json({"jobs": [job.public() for job in request.app[JOBS].jobs.values()]})


async def get_job(request: web.Request) -> web.Response:
    return _json(request.app[JOBS].get(request.match_info["id"]).public())


async def delete_job(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    job = jobs.get(request.match_info["id"])
    jobs.delete(job.id)
    return _json(job.public())


async def job_video(request: web.Request) -> web.StreamResponse:
    job = request.app[JOBS].get(request.match_info["id"])
    if job.state != "done" or job.path is None or not job.path.is_file():
        raise ApiError(409, f"job {job.id} is {job.state}: no video" + (f" ({job.error})" if job.error else ""))
    return web.FileResponse(job.path, headers={"Content-Type": "video/mp4",
                                               "Content-Disposition": f'attachment; filename="iplap-{job.id}.mp4"'})


# -- live ------------------------------------------------------------------------------------------------

async def live(request: web.Request) -> web.StreamResponse:
    config, store = request.app[CONFIG], request.app[STORE]
    avatar_id = request.query.get("avatar")
    if not avatar_id:
        raise ApiError(400, "say which face: /api/live?avatar=ID")
    store.ready(avatar_id)
    refs = _refs(request.query.get("refs"), config.refs)
    return await serve_live(request, request.app[PIPELINE], lambda: store.load(avatar_id, refs), request.app[SLOTS],
                            config)


# -- health and the page -------------------------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    config, pipeline, jobs, slots = request.app[CONFIG], request.app[PIPELINE], request.app[JOBS], request.app[SLOTS]
    return _json({"status": "ok", "version": __version__, "bundle": {"id": pipeline.bundle.bundle_id[:16],
                                                                     "precision": pipeline.bundle.precision},
                  "backend": config.backend, "refs": config.refs, "token": config.token is not None,
                  "slots": {"total": slots.count, "busy": slots.busy}, "jobs": {"queued": jobs.waiting,
                                                                                "running": jobs.running,
                                                                                "max_queue": jobs.max_queue},
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

def create_app(config: ServeConfig, pipeline: Pipeline | None = None) -> web.Application:
    """The aiohttp application for ``config`` (the pipeline is made from the bundle unless given)."""
    if pipeline is None:
        backend = BackendConfig(config.backend, device=config.device, threads=config.render_threads)
        pipeline = Pipeline(config.bundle, PipelineConfig(backend=backend, refs=config.refs))
    # Other bodies than uploads are small JSON; uploads are streamed, with their own limit.
    app = web.Application(middlewares=[errors_middleware, auth_middleware(config.token)], client_max_size=2**20)
    folder = config.avatar_folder
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".iplap-serve-", dir=folder))
    app[CONFIG], app[PIPELINE] = config, pipeline
    app[UPLOADS] = work / "uploads"
    app[UPLOADS].mkdir()
    app[STORE] = AvatarStore(folder, pipeline)
    app[BACKGROUND] = set()

    async def start(app):
        app[SLOTS] = Slots(config.max_sessions)
        app[JOBS] = JobQueue(pipeline, app[STORE], app[SLOTS], work / "jobs", config.max_queue, config.keep_jobs)

    async def stop(app):
        await app[JOBS].close()
        for task in list(app[BACKGROUND]):
            task.cancel()
        app[SLOTS].shutdown()
        shutil.rmtree(work, ignore_errors=True)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
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
    return app


def run_server(config: ServeConfig, announce=print) -> None:
    """Serve until interrupted; ``announce`` gets the URL once the port is open."""
    app = create_app(config)

    async def main():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:  # our own socket: with port 0 the system picks one, and we can say which
            sock = socket.create_server((config.host, config.port), reuse_port=False)
        except OSError as exc:
            await runner.cleanup()
            raise IplapError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
        await web.SockSite(runner, sock).start()
        port = sock.getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        announce(f"iplap serve: http://{host}:{port}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
