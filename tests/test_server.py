"""srpl_cli.server pieces that need no model: binding rules, the request guard, multipart parsing."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi", reason="srpl serve needs the serve extra: pip install 'srpl-cli[serve]'")

from srpl_cli.errors import UsageError  # noqa: E402
from srpl_cli.server import (  # noqa: E402
    ApiError,
    _Guard,
    _host_name,
    check_binding,
    is_loopback,
    read_body,
    split_multipart,
)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)
    check_binding(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_other_hosts_need_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(UsageError, match="without a token"):
        check_binding(host, None)
    check_binding(host, "s3cret")


def test_host_header_names():
    assert _host_name("[::1]:8765") == "::1"
    assert _host_name("localhost:8765") == "localhost"
    assert _host_name("127.0.0.1") == "127.0.0.1"
    assert _host_name("evil.example:80") == "evil.example"


def call(guard, headers):
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    guard.app = app
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, None, send))
    return sent[0]["status"]


def test_guard_checks_token_and_host():
    open_local = _Guard(None, None, check_host=True)
    assert call(open_local, {"host": "127.0.0.1:8765"}) == 200
    assert call(open_local, {"host": "[::1]:8765"}) == 200
    assert call(open_local, {"host": "attacker.example:8765"}) == 421  # DNS rebinding
    assert call(open_local, {}) == 421
    with_token = _Guard(None, "s3cret", check_host=False)
    assert call(with_token, {"host": "hub.lan", "authorization": "Bearer s3cret"}) == 200
    assert call(with_token, {"host": "hub.lan", "authorization": "Bearer s3cre"}) == 401
    assert call(with_token, {"host": "hub.lan"}) == 401
    # a web page of another origin is refused before anything runs, token or not (no CORS)
    page = {"host": "127.0.0.1:8765", "origin": "https://evil.example"}
    assert call(open_local, page) == 403
    assert call(with_token, {**page, "authorization": "Bearer s3cret"}) == 403
    assert call(open_local, {**page, "origin": "null"}) == 403
    assert call(open_local, {**page, "origin": "http://localhost:3000"}) == 200


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    body = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--XyZ\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return body + b"--XyZ--\r\n", "multipart/form-data; boundary=XyZ"


def test_split_multipart_keeps_file_parts_as_labels():
    body, ctype = multipart(
        ("clip", "../../etc/passwd", b"a"), ("top_k", None, b"3"), ("clip", "C:\\x\\b.wav", b"\r\n--b")
    )
    assert split_multipart(body, ctype) == [("passwd", b"a"), ("b.wav", b"\r\n--b")]
    with pytest.raises(ApiError) as e:
        split_multipart(*multipart(("top_k", None, b"3")))
    assert e.value.status == 422
    with pytest.raises(ApiError) as e:
        split_multipart(b"garbage", "multipart/form-data; boundary=XyZ")
    assert e.value.status == 400


def test_read_body_limits():
    async def stream(chunks):
        for c in chunks:
            yield c

    async def stalled():
        yield b"x"
        await asyncio.sleep(10)
        yield b"y"

    assert asyncio.run(read_body(stream([b"ab", b"c"]), {}, 10, 1)) == b"abc"
    for headers, chunks in (({"content-length": "11"}, []), ({}, [b"x" * 6, b"x" * 6])):
        with pytest.raises(ApiError) as e:
            asyncio.run(read_body(stream(chunks), headers, 10, 1))
        assert e.value.status == 413
    with pytest.raises(ApiError) as e:
        asyncio.run(read_body(stream([]), {"content-length": "ten"}, 10, 1))
    assert e.value.status == 400
    with pytest.raises(ApiError) as e:
        asyncio.run(read_body(stalled(), {}, 10, 0.2))
    assert e.value.status == 408 and e.value.message == "upload not received within 0.2 s"


class SlowIdentifier:
    """Stands in for Identifier: records each backbone call, answers one label per clip."""

    def __init__(self):
        self.calls = []

    def identify_waves(self, waves, top_k, threshold, min_speech_s):
        import time

        self.calls.append([label for label, _ in waves])
        time.sleep(0.05)
        return [f"{label}@{top_k}" for label, _ in waves]


def test_micro_batcher_embeds_waiting_requests_together():
    from srpl_cli.server import MicroBatcher

    ident = SlowIdentifier()

    async def run():
        batcher = MicroBatcher(0.5, max_clips=4)
        jobs = [batcher.identify(ident, [(f"r{i}a", None), (f"r{i}b", None)], 1, None) for i in range(4)]
        jobs.append(batcher.identify(ident, [("k", None)], 3, None))  # other top_k: its own call
        return await asyncio.gather(*jobs)

    answers = asyncio.run(run())
    assert answers[:4] == [[f"r{i}a@1", f"r{i}b@1"] for i in range(4)]
    assert answers[4] == ["k@3"]
    # all were waiting when the first call started: together, at most 4 clips a call; top_k=3 apart
    assert ident.calls == [["r0a", "r0b", "r1a", "r1b"], ["r2a", "r2b", "r3a", "r3b"], ["k"]]
