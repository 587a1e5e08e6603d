"""`srpl serve`: the identify path behind a local HTTP API (FastAPI on uvicorn).

The backbone and the model in use stay loaded; every request reads the model's CURRENT pointer (one
small file) and, when a writer such as `srpl tune` has moved it, the first request to notice loads the
new version while the others go on with the old one, so a switch never fails or stalls a request.
Answers come from ``srpl_cli.identifier.Identifier``, the object `srpl identify` uses, as the same
JSON objects. Uploads are held in memory (bounded by ``max_upload_bytes``) and decoded from there:
nothing a client sends is written to disk. Only `srpl serve` imports this module (fastapi at module
level: it resolves the endpoints' annotations from the module's globals).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from srpl_cli.errors import AudioError, DataError, SrplError, StateError, UsageError, WorkspaceError
from srpl_cli.identifier import Identification, Identifier
from srpl_cli.workspace import DEFAULT_MODEL, Workspace

log = logging.getLogger(__name__)

#: host names that reach only this machine (besides loopback IP literals)
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
#: at most this many clips in one multipart request (each is decoded and embedded)
MAX_CLIPS_PER_REQUEST = 64
#: clips of concurrent requests embedded in one backbone call (bounds the memory of one call)
MAX_BATCH_CLIPS = 32


@dataclass(frozen=True)
class ServeConfig:
    """Everything `srpl serve` is told; the defaults are the CLI's."""

    workspace: Path | None = None
    model: str = DEFAULT_MODEL
    token: str | None = None
    host: str = "127.0.0.1"
    max_upload_bytes: int = 25 * 1024 * 1024
    max_clip_s: float = 60.0
    #: POST /segments: the longest recording (read from its header)
    max_recording_s: float = 4 * 3600.0
    read_timeout_s: float = 30.0
    min_speech_s: float = 0.5
    backbone_source: Path | None = None
    #: POST /speakers/{name}: enroll from uploads and refit (a write: off unless asked for)
    allow_enroll: bool = False


#: the bodies /identify and /speakers/{name} accept, for the OpenAPI page (they are read by hand)
_BODY_SPEC = {
    "requestBody": {
        "required": True,
        "content": {
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "clip": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
        },
    }
}


def is_loopback(host: str) -> bool:
    """True when ``host`` (an IP literal or a local name) can only be reached from this machine."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to expose the service beyond this machine without a token."""
    if not token and not is_loopback(host):
        raise UsageError(
            f"refusing to listen on {host} without a token: anyone on the network could use the service",
            hint="pass --token TOKEN (or set SRPL_TOKEN), or bind to 127.0.0.1",
        )


class ApiError(Exception):
    """An answer other than 200: status + the one-line message the CLI would print."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


def _status_of(exc: SrplError) -> int:
    from srpl_cli.audio import ClipTooLongError

    if isinstance(exc, ClipTooLongError):
        return 413
    if isinstance(exc, (DataError, UsageError)):
        return 422
    if isinstance(exc, (StateError, WorkspaceError)):
        return 503
    return 500


class ModelHolder:
    """The ``Identifier`` for the version the model's CURRENT names now, reloaded when it moves."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.workspace = Workspace(config.workspace)
        self._current: Identifier | None = None
        self._loading = threading.Lock()
        self._failed: dict[str, str] = {}  # version -> why it could not be loaded (not retried)
        self._last_warning = ""

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load(self) -> Identifier:
        """First load (at start-up): errors propagate so `srpl serve` fails with one line."""
        self._current = Identifier.load(
            self.workspace, self.config.model, backbone_source=self.config.backbone_source
        )
        return self._current

    def get(self) -> Identifier:
        cur = self._current
        try:
            version = self.workspace.current_model(self.config.model).version
        except SrplError as exc:  # CURRENT unreadable for a moment or removed: keep serving
            if cur is None:
                raise
            if exc.message != self._last_warning:  # once per problem, not once per request
                self._last_warning = exc.message
                log.warning("keeping %s/%s: %s", cur.version.name, cur.version.version, exc)
            return cur
        if cur is not None and (cur.version.version == version or version in self._failed):
            return cur
        # one request loads; the others keep answering with the model they have
        if not self._loading.acquire(blocking=cur is None):
            return cur  # type: ignore[return-value]
        try:
            cur = self._current
            if cur is not None and cur.version.version == version:
                return cur
            try:
                new = Identifier.load(
                    self.workspace,
                    self.config.model,
                    version=version,
                    backbone_source=self.config.backbone_source,
                    backbone=cur.backbone if cur is not None else None,
                )
            except SrplError as exc:
                if cur is None:
                    raise
                self._failed[version] = exc.message
                log.warning(
                    "cannot switch to %s/%s (%s): keeping %s",
                    self.config.model,
                    version,
                    exc,
                    cur.version.version,
                )
                return cur
            log.info("switched to model %s/%s", new.version.name, new.version.version)
            self._current = new
            return new
        finally:
            self._loading.release()


# ---------------------------------------------------------------- embedding queue
class MicroBatcher:
    """One backbone call at a time; the requests that arrive meanwhile (same model version, same
    ``top_k`` and ``threshold``) are embedded together in the next call. On CPU a batch of clips costs
    much less than the same clips one by one, so throughput grows with concurrent clients instead of
    staying flat, and a lone client waits for nothing."""

    def __init__(self, min_speech_s: float, max_clips: int = MAX_BATCH_CLIPS) -> None:
        self.min_speech_s = min_speech_s
        self.max_clips = max_clips
        self._pending: list[tuple[tuple, Identifier, list, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def identify(
        self, identifier: Identifier, waves: list[tuple[str, Any]], top_k: int, threshold: float | None
    ) -> list[Identification]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append(((id(identifier), top_k, threshold), identifier, waves, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                key = self._pending[0][0]
                batch, rest, n = [], [], 0
                for item in self._pending:
                    if item[0] == key and (not batch or n + len(item[2]) <= self.max_clips):
                        batch.append(item)
                        n += len(item[2])
                    else:
                        rest.append(item)
                self._pending = rest
                batch = [item for item in batch if not item[3].done()]  # clients that went away
                if not batch:
                    continue
                waves = [w for item in batch for w in item[2]]
                try:
                    answers = await anyio.to_thread.run_sync(
                        batch[0][1].identify_waves, waves, key[1], key[2], self.min_speech_s
                    )
                except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                    for item in batch:
                        if not item[3].done():
                            item[3].set_exception(exc)
                    continue
                start = 0
                for item in batch:
                    if not item[3].done():
                        item[3].set_result(answers[start : start + len(item[2])])
                    start += len(item[2])
        finally:
            self._task = None


# ---------------------------------------------------------------- request bodies
async def read_body(receive_stream: Any, headers: Any, limit: int, timeout: float) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds ``limit`` and 408 when the client takes
    longer than ``timeout`` seconds to send it (a slow or stalled client cannot hold a worker)."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if size > limit:
            raise ApiError(413, _too_large(size, limit))
    buf = bytearray()

    async def collect() -> None:
        async for chunk in receive_stream:
            buf.extend(chunk)
            if len(buf) > limit:
                raise ApiError(413, _too_large(len(buf), limit, at_least=True))

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"upload not received within {timeout:g} s") from None
    return bytes(buf)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return f"upload too large: {'over ' if at_least else ''}{size / 2**20:.1f} MiB (at most {limit / 2**20:g} MiB)"


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every file part of a multipart/form-data body, parsed in memory with
    python-multipart (the parser FastAPI uses) so no part is spooled to a temp file."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart body without a boundary")
    parts: list[dict[str, Any]] = []
    header: dict[str, bytes] = {}

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] = header.get("field", b"") + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] = header.get("value", b"") + data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header.get("field", b"").lower()] = header.get("value", b"")
        header.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several kinds on bad input
        raise ApiError(400, f"malformed multipart body ({exc})") from None
    files = []
    for part in parts:
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if b"filename" not in disp:
            continue  # a plain form field, not a clip
        name = disp[b"filename"].decode("utf-8", "replace")
        files.append((_label(name) or f"clip{len(files) + 1}", bytes(part["data"])))
    if not files:
        raise ApiError(422, "no audio file in the multipart body (send each clip as a file part)")
    if len(files) > MAX_CLIPS_PER_REQUEST:
        raise ApiError(413, f"too many clips: {len(files)} (at most {MAX_CLIPS_PER_REQUEST} per request)")
    return files


def _label(name: str) -> str:
    """A client's file name is only a label in the answer: its last component, printable, short."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:200]


# ---------------------------------------------------------------- the app
def create_app(config: ServeConfig, holder: ModelHolder | None = None) -> Any:
    """The FastAPI app; the model is loaded here, so a workspace without one fails before binding."""
    from srpl_cli._version import __version__
    from srpl_cli.audio import decode_audio

    holder = holder or ModelHolder(config)
    if not holder.loaded:
        holder.load()
    batcher = MicroBatcher(config.min_speech_s)
    app = FastAPI(
        title="srpl",
        version=__version__,
        description="Few-shot open-set speaker identification: who speaks in a clip, or nobody known. "
        "Answers are the objects of `srpl identify --json`.",
    )
    app.state.holder = holder

    def error_response(status: int, message: str, hint: str | None = None, **extra: Any) -> JSONResponse:
        body = {"error": message, **({"hint": hint} if hint else {}), **extra}
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.hint)

    @app.exception_handler(SrplError)
    async def _srpl_error(_: Request, exc: SrplError) -> JSONResponse:
        return error_response(_status_of(exc), exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    def prepare(
        clips: list[tuple[str, bytes]],
    ) -> tuple[Identifier, list[tuple[str, Any]], dict[int, Identification]]:
        """In a worker thread, apart from the embedding queue (so loading a new model version never
        waits for it): the model to use now, the decoded waves, and an answer for each clip that failed
        (an over-long clip raises: the request gets 413)."""
        identifier = holder.get()
        waves = []
        failed: dict[int, Identification] = {}
        for i, (label, data) in enumerate(clips):
            try:
                waves.append((label, decode_audio(data, label, max_seconds=config.max_clip_s)))
            except AudioError as exc:
                if _status_of(exc) == 413:
                    raise
                failed[i] = Identification(label, None, None, {}, [], error=exc.reason)
        return identifier, waves, failed

    @app.post(
        "/identify",
        openapi_extra=_BODY_SPEC,
        summary="Who speaks in a clip (raw body) or in each of several (multipart)",
        response_description="raw body: one `srpl identify --json` object; multipart: a list of them",
    )
    async def identify(
        request: Request,
        top_k: int = Query(1, ge=1, le=1000, description="Include the K best speakers in `top`."),
        threshold: float | None = Query(
            None, description="Override the calibrated threshold.", allow_inf_nan=False
        ),
        name: str = Query("upload", max_length=200, description="Label of a raw-body clip in the answer."),
    ) -> Any:
        body = await read_body(
            request.stream(), request.headers, config.max_upload_bytes, config.read_timeout_s
        )
        content_type = request.headers.get("content-type", "")
        multipart = content_type.lower().startswith("multipart/form-data")
        clips = split_multipart(body, content_type) if multipart else [(_label(name) or "upload", body)]
        identifier, waves, failed = await anyio.to_thread.run_sync(prepare, clips)
        scored = iter(await batcher.identify(identifier, waves, top_k, threshold) if waves else [])
        results = [failed[i] if i in failed else next(scored) for i in range(len(clips))]
        headers = {"X-Srpl-Model": f"{identifier.version.name}/{identifier.version.version}"}
        if not multipart:
            r = results[0]
            if r.error:
                return error_response(422, f"{r.path}: {r.error}")
            return JSONResponse(r.to_dict(), headers=headers)
        dicts = [r.to_dict() for r in results]
        if all(r.error for r in results):
            return error_response(422, "no usable clip to identify", results=dicts)
        return JSONResponse(dicts, headers=headers)

    if config.allow_enroll:
        add_enroll_route(app, config, holder)
    add_segments_route(app, config, holder)

    @app.get("/speakers", summary="The speakers the model in use knows")
    def speakers() -> dict[str, Any]:
        ident = holder.get()
        clips = ident.info.get("clips") or {}
        return {
            "model": ident.version.name,
            "version": ident.version.version,
            "speakers": [{"name": s, "clips": len(clips.get(s, []))} for s in ident.speakers],
        }

    @app.get("/model", summary="The model in use: name, version, method, backbone, threshold")
    def model() -> dict[str, Any]:
        return holder.get().describe()

    @app.get("/health", summary="Liveness: ok with the model version being served")
    def health() -> dict[str, Any]:
        ident = holder.get()
        return {"status": "ok", "model": ident.version.name, "version": ident.version.version}

    return _Guard(app, config.token, check_host=is_loopback(config.host))


def _store_upload(ws: Workspace, path: Path, data: bytes) -> Path:
    """Write an upload into a private folder under the workspace's tmp/ (the caller removes it)."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise WorkspaceError(f"cannot store the upload in {ws.tmp_dir}: {exc.strerror or exc}") from None
    return path


def add_enroll_route(app: FastAPI, config: ServeConfig, holder: ModelHolder) -> None:
    """POST /speakers/{name}: `srpl speakers add` (srpl_cli.management.add_speaker, its lock and refit)
    on uploaded clips, which are written to a private directory under the workspace's tmp/ for the
    duration of the call and always removed."""
    from srpl_cli.audio import check_length, probe_audio
    from srpl_cli.datasets import AUDIO_EXTENSIONS
    from srpl_cli.management import add_speaker
    from srpl_cli.workspace import check_name

    def enroll_clips(name: str, clips: list[tuple[str, bytes]]) -> dict[str, Any]:
        check_name(name, "speaker name")
        backbone = holder.get().backbone
        ws = holder.workspace.ensure()
        with ws.building("upload") as folder:
            folder.chmod(0o700)
            labels = {}
            for i, (label, data) in enumerate(clips):
                try:  # a readable clip keeps its format's extension (the folder is read by extension)
                    seconds, fmt = probe_audio(data, label)
                except AudioError:
                    seconds, fmt = 0.0, "wav"  # unreadable: add_speaker reports it with the CLI's reason
                check_length(seconds, config.max_clip_s, label)
                ext = f".{fmt}" if f".{fmt}" in AUDIO_EXTENSIONS else ".wav"
                path = _store_upload(ws, folder / f"clip{i + 1:04d}{ext}", data)
                labels[str(path)] = label
            change = add_speaker(
                ws,
                name,
                [folder],
                config.model,
                backbone_source=config.backbone_source,
                min_speech_s=config.min_speech_s,
                _backbone=backbone,
            ).to_dict()
        change["problems"] = [{**p, "path": labels.get(p["path"], p["path"])} for p in change["problems"]]
        return change

    @app.post(
        "/speakers/{name}",
        status_code=201,
        openapi_extra=_BODY_SPEC,
        summary="Enroll (or re-enroll) a speaker from uploaded clips and make the refitted model current",
        response_description="what `srpl speakers add --json` prints: the new version and who it knows",
    )
    async def enroll(request: Request, name: str) -> Any:
        body = await read_body(
            request.stream(), request.headers, config.max_upload_bytes, config.read_timeout_s
        )
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            clips = split_multipart(body, content_type)
        else:
            clips = [(f"{name}.audio", body)]
        # not under the identify worker limit: identify goes on with the old version meanwhile
        change = await anyio.to_thread.run_sync(enroll_clips, name, clips)
        return JSONResponse(change, status_code=201)


def add_segments_route(app: FastAPI, config: ServeConfig, holder: ModelHolder) -> None:
    """POST /segments: who speaks when along an uploaded recording, through the code path of `srpl
    identify --segments` (``srpl_cli.segments``, with the served model). A recording is read in blocks
    from a file, so the upload lives in a private directory under the workspace's tmp/ for the duration
    of the call and is always removed; no window cache is written."""
    from srpl_cli.audio import check_length, probe_audio
    from srpl_cli.datasets import AUDIO_EXTENSIONS
    from srpl_cli.segments import segmenter_for

    by_version: dict[str, Any] = {}  # the stopping rule of the strangers' clustering, per model version
    building = threading.Lock()

    def segment_upload(label: str, data: bytes, threshold: float | None) -> tuple[Identifier, dict[str, Any]]:
        identifier = holder.get()
        key = identifier.version.version
        with building:  # worker threads: one builds it, the others reuse it (no half-switched dict)
            segmenter = by_version.get(key)
            if segmenter is None:
                segmenter = segmenter_for(identifier, holder.workspace, use_cache=False)
                by_version.clear()
                by_version[key] = segmenter
        if not data:
            raise AudioError(label, "empty file (0 bytes)")
        seconds, fmt = probe_audio(data, label)
        check_length(seconds, config.max_recording_s, label)
        ws = holder.workspace.ensure()
        with ws.building("upload") as folder:
            folder.chmod(0o700)
            ext = f".{fmt}" if f".{fmt}" in AUDIO_EXTENSIONS else ".wav"
            path = _store_upload(ws, folder / f"recording{ext}", data)
            try:
                result = segmenter(path, threshold=threshold)
            except AudioError as exc:
                raise AudioError(label, exc.reason) from None
        answer = result.to_dict()
        answer["path"] = label
        return identifier, answer

    @app.post(
        "/segments",
        openapi_extra=_BODY_SPEC,
        summary="Who speaks when along a recording (raw body): enrolled names or unknown-1, unknown-2, ...",
        response_description="what `srpl identify --segments --json` reports, as one object",
    )
    async def segments(
        request: Request,
        threshold: float | None = Query(
            None, description="Override the calibrated threshold.", allow_inf_nan=False
        ),
        name: str = Query("upload", max_length=200, description="Label of the recording in the answer."),
    ) -> Any:
        body = await read_body(
            request.stream(), request.headers, config.max_upload_bytes, config.read_timeout_s
        )
        identifier, answer = await anyio.to_thread.run_sync(
            segment_upload, _label(name) or "upload", body, threshold
        )
        headers = {"X-Srpl-Model": f"{identifier.version.name}/{identifier.version.version}"}
        return JSONResponse(answer, headers=headers)


class _Guard:
    """ASGI wrapper in front of every route, /docs included: no request from a web page of another
    origin; the bearer token when one is set; and, on a loopback binding, a loopback Host header (a
    web page that rebinds its DNS name to 127.0.0.1 must not reach the service). No CORS headers are
    ever added."""

    def __init__(self, app: Any, token: str | None, check_host: bool) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.check_host = check_host

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            problem = None
            origin = headers.get(b"origin")
            if origin is not None and not is_loopback(urlsplit(origin.decode("latin-1")).hostname or ""):
                # a browser sends Origin with cross-site requests; without CORS it cannot read the answer,
                # but a POST (an enrollment) would still run: refuse it before anything happens
                problem = (403, "cross-origin requests are refused (srpl serve sends no CORS headers)")
            elif self.check_host and not is_loopback(_host_name(headers.get(b"host", b"").decode("latin-1"))):
                problem = (421, "this service only answers requests addressed to a loopback host")
            elif self.expected is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self.expected
            ):
                problem = (401, "missing or wrong token: send 'Authorization: Bearer TOKEN'")
            if problem is not None:
                await _send_json(send, problem[0], {"error": problem[1]})
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """'[::1]:8765' -> '::1', 'localhost:8765' -> 'localhost'."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    import json

    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
