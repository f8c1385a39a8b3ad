"""Raw HTTP/1.1 over a loopback socket, for bytes an HTTP client library refuses to send.

`exchange` sends one request exactly as given and reads one response (status, headers,
body; Content-Length framed, or until the server closes); `read_answer` reads one answer
off a kept-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


async def exchange(port: int, payload: bytes, timeout: float = 10.0,
                   host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        status, headers = await _head(reader, timeout)
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])),
                                          timeout)
        else:
            body = await asyncio.wait_for(reader.read(), timeout)
        return status, headers, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _head(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ", 2)[1]), headers


async def read_answer(reader: asyncio.StreamReader, timeout: float = 10.0
                      ) -> tuple[int, dict[str, str], bytes]:
    """One answer off a kept-alive connection (Content-Length or chunked; else no body)."""
    status, headers = await _head(reader, timeout)
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])),
                                      timeout)
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)).strip(), 16)
            data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
            if size == 0:
                break
            body += data[:-2]
    else:
        body = b""
    return status, headers, body


def request(method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | list[tuple[str, str]] | None = None,
            raw_headers: bytes = b"") -> bytes:
    """A request's bytes; `raw_headers` are appended as given (odd bytes allowed)."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in items]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1") + raw_headers + b"\r\n" + (body or b"")


def error_type(body: bytes) -> Any:
    try:
        return json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return None
