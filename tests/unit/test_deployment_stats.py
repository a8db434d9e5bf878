"""A stream counts as in flight until it closes, not until its first event (least_busy depends on it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.outcome import Served
from inferrelay.providers.remote import RemoteClient
from inferrelay.routing.resolve import Step
from inferrelay.routing.router import StepRouter
from inferrelay.server.openai_routes import OpenedStream
from tests.unit.test_remote_client import upstream


async def slow_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for word in ("one", "two"):
        await response.write(f'data: {{"model": "m", "text": "{word}"}}\n\n'.encode())
        await asyncio.sleep(0.2)
    await response.write(b"data: [DONE]\n\n")
    return response


async def no_local(spec: ModelSpec) -> Served[OpenedStream]:
    raise AssertionError("no local step here")


def test_a_stream_is_in_flight_until_it_closes(tmp_path: Path) -> None:
    async def go() -> list[int]:
        async with upstream({"/v1/chat/completions": slow_stream}) as client:
            settings = Settings(models=[], home=tmp_path, providers={"up": client.config})
            router = StepRouter(settings)

            async def remote(remote_client: RemoteClient, model: str) -> OpenedStream:
                opened = await remote_client.stream("chat/completions", {"stream": True}, model, "m")
                return OpenedStream(opened.rest, opened.aclose)

            stats = router.book["up"]
            served = await router.serve("m", [Step("up", "m")], no_local, remote)
            seen = [stats.in_flight]
            first_event_latency = stats.latency_ms
            events = [event async for event in served.result.events]
            seen.append(stats.in_flight)
            await served.result.close()
            seen.append(stats.in_flight)
            await served.result.close()  # closing twice releases once
            seen.append(stats.in_flight)
            await router.aclose()
            assert len(events) == 1  # the second event; the first came with the opening
            assert first_event_latency is not None
            assert stats.latency_ms == first_event_latency, "a stream's latency is its time to first event"
            return seen

    assert asyncio.run(go()) == [1, 1, 0, 0]
