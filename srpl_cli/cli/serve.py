"""`srpl serve`: keep the model loaded behind a local HTTP API (srpl_cli.server does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from srpl_cli.cli._options import BackboneSourceOpt, MinSpeechOpt, WorkspaceOpt, positive_number

HELP = """Serve identify over HTTP, with the backbone and the model kept loaded.

POST /identify (a clip as the body, or several as multipart), GET /speakers, /model, /health; API docs
at /docs. A model version made current by `srpl tune` (or `srpl speakers`, `srpl models use`) is used
from the next request on, without a restart. Listens on 127.0.0.1 only unless given a token (--token or
$SRPL_TOKEN); with a token every request needs 'Authorization: Bearer TOKEN'. See docs/serve.md.

[b]Examples[/b]

  srpl serve
  curl --data-binary @clip.wav http://127.0.0.1:8765/identify
  SRPL_TOKEN=s3cret srpl serve --host 0.0.0.0 --port 8765
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port (0: any free port).")] = 8765,
    workspace: WorkspaceOpt = None,
    model: Annotated[str, typer.Option("--model", help="Name of the tuned model to serve.")] = "default",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="SRPL_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on every request (default: $SRPL_TOKEN).",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb",
            help="Largest request body (MiB); larger ones get 413.",
            callback=positive_number,
        ),
    ] = 25.0,
    max_clip_seconds: Annotated[
        float,
        typer.Option(
            "--max-clip-seconds",
            help="Longest clip (seconds); longer ones get 413.",
            callback=positive_number,
        ),
    ] = 60.0,
    max_recording_minutes: Annotated[
        float,
        typer.Option(
            "--max-recording-minutes",
            help="Longest recording for POST /segments (minutes); longer get 413.",
            callback=positive_number,
        ),
    ] = 240.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds a client has to send its upload (else 408).", callback=positive_number
        ),
    ] = 30.0,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads for embedding.")] = 1,
    backbone_path: BackboneSourceOpt = None,
    min_speech: MinSpeechOpt = 0.5,
    allow_enroll: Annotated[
        bool,
        typer.Option(
            "--allow-enroll", help="Add POST /speakers/NAME: enroll from uploaded clips and refit the model."
        ),
    ] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request to stderr.")] = False,
) -> None:
    from srpl_cli.cli._output import err
    from srpl_cli.errors import UsageError

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    for flag, value in (
        ("--max-upload-mb", max_upload_mb),
        ("--max-clip-seconds", max_clip_seconds),
        ("--max-recording-minutes", max_recording_minutes),
    ):
        if value <= 0:
            raise UsageError(f"{flag} must be positive")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    try:
        import uvicorn

        from srpl_cli import server
    except ImportError as exc:
        raise UsageError(
            f"srpl serve needs the server extra ({exc.name} is not installed)",
            hint="pip install 'srpl-cli[serve]'",
        ) from None

    token = token or None  # an empty $SRPL_TOKEN is no token
    server.check_binding(host, token)
    config = server.ServeConfig(
        workspace=workspace,
        model=model,
        token=token,
        host=host,
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_clip_s=max_clip_seconds,
        max_recording_s=60.0 * max_recording_minutes,
        read_timeout_s=timeout,
        min_speech_s=min_speech,
        backbone_source=backbone_path,
        allow_enroll=allow_enroll,
    )
    holder = server.ModelHolder(config)
    described = holder.load().describe()  # a workspace without a model fails here, before binding
    import logging

    import torch  # (loaded by the backbone by now)

    logging.getLogger("srpl_cli.server").setLevel(logging.INFO)  # model switches are worth a line

    # one thread by default: intra-op threads fighting other processes for the cores made the d-vector
    # 25x slower on a loaded 2-core machine; the event loop uses the other core (docs/serve.md)
    torch.set_num_threads(threads)
    app = server.create_app(config, holder)
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"serving model {described['name']}/{described['version']} ({described['backbone']}, "
        f"{len(described['speakers'])} speakers) on http://{shown}:{bound_port} (API docs: /docs)"
        + (", token required" if token else "")
        + (", enrollment allowed" if allow_enroll else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    uv = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="info" if access_log else "warning",
            access_log=access_log,
            timeout_keep_alive=5,
            # beyond this many open connections, new ones get 503 at once instead of queueing
            limit_concurrency=256,
            server_header=False,
        )
    )
    uv.run(sockets=[sock])


def _listen(host: str, port: int):
    """Bind the socket ourselves: a busy port or a bad address is one error line, and --port 0 gets a
    free port whose number is printed."""
    import socket

    from srpl_cli.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
