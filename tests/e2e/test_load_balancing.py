"""A group of two real upstreams spreads load as its strategy claims."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

UPSTREAM = "models:\n  echo:\n    source: fake\n    capabilities: [chat]\n    engines: [fake]\n"
SLOW_UPSTREAM = UPSTREAM + "    engine_options: {fake: {latency_ms: 300}}\n"


def front_for(start_server: Any, test_home: Path, tmp_path: Path, strategy: str, slow_first: bool) -> Any:
    urls = []
    for index in range(2):
        folder = tmp_path / f"up{index}"
        folder.mkdir()
        (folder / "model-mappings.yaml").write_text(SLOW_UPSTREAM if slow_first and index == 0 else UPSTREAM)
        urls.append(start_server(tmp_path / f"home{index}", "--config", str(folder)).url)
    config = tmp_path / "front"
    config.mkdir()
    providers = "".join(
        f"  up{i}:\n    type: openai_compatible\n    base_url: {url}/v1\n    health_interval_s: 0\n"
        for i, url in enumerate(urls)
    )
    (config / "providers.yaml").write_text(f"providers:\n{providers}")
    (config / "model-mappings.yaml").write_text(
        f"exact_matches:\n  echo: {{group: pool}}\nload_balancing:\n  pool:\n    strategy: {strategy}\n"
        "    members: [{provider: up0}, {provider: up1}]\n"
    )
    return start_server(test_home, "--config", str(config))


def ask(front: Any) -> str:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{front.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.headers["x-inferrelay-backend"]


def test_round_robin_alternates(start_server: Any, test_home: Path, tmp_path: Path) -> None:
    front = front_for(start_server, test_home, tmp_path, "round_robin", slow_first=False)
    assert [ask(front) for _ in range(6)] == ["up0", "up1"] * 3


def test_least_busy_sends_more_to_the_faster_upstream(start_server: Any, test_home: Path, tmp_path: Path) -> None:
    front = front_for(start_server, test_home, tmp_path, "least_busy", slow_first=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = Counter(pool.map(lambda _: ask(front), range(24)))
    assert counts["up1"] > 2 * counts["up0"], counts
