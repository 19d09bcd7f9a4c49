"""The ingress under hostile clients, over raw HTTP on loopback: stalled, oversize, crowded, odd.

Bodies that never complete are written by hand on a socket, so a test shows that the
service answered before the body ended; no test asserts on elapsed time.
"""

import asyncio
import io
import json
import logging
import random
import re
import string
from pathlib import Path
from typing import Any

import pytest

from bot.app import STORE, create_app
from bot.settings import Settings
from tests.bot.intake.test_ingress import SECRET, example, headers, planning_router

LIMIT = 64 * 1024
WAIT = 30.0  # a ceiling so a broken service fails the test instead of hanging it


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    fields: dict[str, Any] = {"max_body_bytes": LIMIT, **changes}
    return Settings(webhook_secret=SECRET, database=tmp_path / "store.sqlite3", **fields)


async def start(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings, routers=[planning_router()]))


class RawRequest:
    """One hand-written HTTP/1.1 request on its own connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, client: Any, sent: dict[str, str], *, length: int | None, first: bytes = b""
    ) -> "RawRequest":
        """Send the request line, headers and ``first`` bytes of the body, and no more."""
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        lines = ["POST /webhook HTTP/1.1", f"Host: {client.server.host}"]
        lines += [f"{name}: {value}" for name, value in sent.items() if name != "Content-Length"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Read the status, headers and JSON body of the answer."""

        async def read() -> tuple[int, dict[str, str], dict[str, Any]]:
            status = int((await self.reader.readline()).split()[1])
            found: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                found[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(found["content-length"]))
            return status, found, json.loads(body)

        return await asyncio.wait_for(read(), WAIT)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def stored(client: Any) -> tuple[int, int]:
    store = client.server.app[STORE]
    return await store.delivery_count(), sum((await store.job_counts()).values())


async def pending_bodies(client: Any) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(r"^model_guard_pending_bodies (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


async def until_pending(client: Any, count: int) -> None:
    """Wait until the service reports ``count`` bodies being read (a wait, not an assertion)."""

    async def poll() -> None:
        while await pending_bodies(client) != count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


def big_body() -> bytes:
    return json.dumps({"action": "opened", "number": 1, "padding": "x" * (LIMIT * 2)}).encode()


async def test_stalled_body_gets_408_and_nothing_is_stored(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path, body_timeout_s=0.2))
    body = example("pull_request", "opened")
    request = await RawRequest.open(
        client, headers("pull_request", body), length=len(body), first=body[:10]
    )
    status, _, answer = await request.response()
    await request.close()
    assert status == 408 and "body not received" in answer["message"]
    assert await stored(client) == (0, 0)
    assert await pending_bodies(client) == 0


async def test_bodies_over_the_cap_get_503_at_once_and_the_place_is_given_back(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path, max_pending_bodies=1))
    body = example("pull_request", "opened")
    stalled = await RawRequest.open(
        client, headers("pull_request", body), length=len(body), first=body[:10]
    )
    await until_pending(client, 1)
    crowded = await RawRequest.open(
        client, headers("pull_request", body), length=len(body), first=body[:10]
    )
    status, sent_back, answer = await crowded.response()  # its body never finishes
    assert status == 503 and sent_back["retry-after"].isdigit()
    assert "retry later" in answer["message"]
    await crowded.close()
    await stalled.close()  # the stalled client goes away: its place is free again
    await until_pending(client, 0)
    accepted = await client.post("/webhook", data=body, headers=headers("pull_request", body))
    assert accepted.status == 202
    assert await stored(client) == (1, 1)


async def test_content_length_over_the_limit_gets_413_before_any_body_is_sent(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = big_body()
    request = await RawRequest.open(client, headers("pull_request", body), length=len(body))
    status, _, answer = await request.response()
    await request.close()
    assert status == 413 and str(LIMIT) in answer["message"]
    assert await stored(client) == (0, 0)


async def test_chunked_body_over_the_limit_gets_413_while_it_is_still_arriving(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = big_body()
    sent = {**headers("pull_request", body), "Transfer-Encoding": "chunked"}
    request = await RawRequest.open(client, sent, length=None)
    chunk = 16 * 1024
    for start_at in range(0, LIMIT + chunk, chunk):  # past the limit, never the last chunk
        piece = body[start_at : start_at + chunk]
        await request.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    status, _, answer = await request.response()
    await request.close()
    assert status == 413 and str(LIMIT) in answer["message"]
    assert await stored(client) == (0, 0)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "missing X-Hub-Signature-256"),
        ("sha1_only", "SHA-1 signatures are not accepted"),
        ("malformed", "malformed X-Hub-Signature-256"),
    ],
)
async def test_unusable_signature_is_refused_before_the_body_is_read(
    aiohttp_client: Any, tmp_path: Path, case: str, reason: str
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = example("pull_request", "opened")
    sent = headers("pull_request", body)
    del sent["X-Hub-Signature-256"]
    if case == "sha1_only":
        sent["X-Hub-Signature"] = "sha1=" + "0" * 40
    if case == "malformed":
        sent["X-Hub-Signature-256"] = "sha256=" + "z" * 64
    request = await RawRequest.open(client, sent, length=len(body), first=body[:10])
    status, _, answer = await request.response()  # the body never completes
    await request.close()
    assert status == 401 and reason in answer["message"]
    assert await pending_bodies(client) == 0
    assert await stored(client) == (0, 0)


async def test_random_event_names_add_no_metric_label_values(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    rng = random.Random(12)
    names = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(40)]
    for name in names:
        response = await client.post(
            "/webhook", data=b"{}", headers={"X-GitHub-Event": name, "X-GitHub-Delivery": "d-1"}
        )
        assert response.status == 401
    text = await (await client.get("/metrics")).text()
    assert not any(name in text for name in names)
    assert 'model_guard_deliveries_total{event="other",outcome="refused_401"} 40.0' in text


async def test_signed_delivery_of_an_unhandled_event_is_counted_as_other(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = example("push", "event")
    response = await client.post("/webhook", data=body, headers=headers("push", body))
    assert response.status == 202
    text = await (await client.get("/metrics")).text()
    assert 'model_guard_deliveries_total{event="other",outcome="accepted"} 1.0' in text


def odd_payload(case: str) -> bytes:
    data = json.loads(example("pull_request", "opened"))
    if case == "deep_nesting":
        depth = 100_000
        return json.dumps(data)[:-1].encode() + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    if case == "huge_integer":
        return json.dumps(data)[:-1].encode() + b', "n": ' + b"7" * 5000 + b"}"
    if case == "installation_id_beyond_64_bits":
        data["installation"] = {"id": 2**70}
    if case == "surrogate_in_action":
        data["action"] = "\ud800"
    if case == "surrogate_in_full_name":
        data["repository"]["full_name"] = "octo/\ud800repo"
    if case == "no_number":
        del data["number"]  # the planning router reads it
    text = json.dumps(data)  # ensure_ascii: a lone surrogate is written as the escape \ud800
    assert case not in {"surrogate_in_action", "surrogate_in_full_name"} or "\\ud800" in text
    return text.encode()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("deep_nesting", "nests deeper than"),
        ("huge_integer", "5000 digits"),
        ("installation_id_beyond_64_bits", "beyond 64 bits"),
        ("surrogate_in_action", "action holds a lone surrogate"),
        ("surrogate_in_full_name", "repository.full_name holds a lone surrogate"),
        ("no_number", "not a well-formed pull_request event"),
    ],
)
async def test_signed_odd_payload_gets_400_in_one_line_and_nothing_stored(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, reason: str
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path, max_body_bytes=1 << 20))
    body = odd_payload(case)
    with caplog.at_level(logging.DEBUG):
        response = await client.post("/webhook", data=body, headers=headers("pull_request", body))
        message = (await response.json())["message"]
    assert response.status == 400
    assert reason in message and "\n" not in message
    assert await stored(client) == (0, 0)
    assert not any(record.exc_info for record in caplog.records)
    assert "Traceback" not in caplog.text


async def test_signed_body_larger_than_the_memory_spool_is_accepted_whole(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from bot.intake.ingress import SPOOL_BYTES

    client = await start(aiohttp_client, make_settings(tmp_path, max_body_bytes=4 * SPOOL_BYTES))
    data = json.loads(example("pull_request", "opened"))
    data["padding"] = "y" * (SPOOL_BYTES + SPOOL_BYTES // 2)
    body = json.dumps(data).encode()
    sent = headers("pull_request", body)
    response = await client.post("/webhook", data=io.BytesIO(body), headers=sent)
    assert response.status == 202
    assert await stored(client) == (1, 1)
