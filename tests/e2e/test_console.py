"""The console at /ui in a real headless chromium against a real server: models, requests with their attempts,
an unload from the page, a dead provider's state, a batch job, and the admin key asked for once keys exist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2
from tests.e2e.test_keys import make_key
from tests.unit.test_error_rules import closed_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "console"
WAIT_S = 60


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs the system chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))  # no Selenium Manager
    yield driver
    driver.quit()


@pytest.fixture
def home(tmp_path: Path, test_home: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(test_home / "cache")
    return home


def config(tmp_path: Path) -> Path:
    """A remote provider on a port nothing listens on, first in a chain that ends on the local smollm2."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "providers.yaml").write_text(
        "providers:\n  dead:\n    type: openai_compatible\n"
        f"    base_url: http://127.0.0.1:{closed_port()}/v1\n"
        "    max_retries: 0\n    health_interval_s: 0\n    cooldown_s: 600\n    timeouts: {connect_s: 1, read_s: 10}\n"
    )
    (folder / "model-mappings.yaml").write_text(
        "exact_matches:\n  dead-then-local: {chain: dead-first}\n"
        "fallback_chains:\n  dead-first:\n"
        f"    - {{provider: dead, model: {SMOLLM2.name}}}\n    - {{provider: local, model: {SMOLLM2.name}}}\n"
    )
    return folder


def wait_for(driver: Any, check: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(check, message=what)


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return " ".join(e.text for e in found)


def shoot(driver: Any, tmp_path: Path, name: str) -> None:
    """Each page's screenshot under the test's tmp dir; copied to docs/console/ with INFERRELAY_UPDATE_SCREENSHOTS=1."""
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(path))
    if os.environ.get("INFERRELAY_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, SHOTS_DIR / path.name)


def batch_job(home: Path, tmp_path: Path) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i} of a small job"}) + "\n" for i in range(40)))
    out = tmp_path / "job"
    command = [sys.executable, "-m", "inferrelay.cli", "batch", "embed", str(source), "-o", str(out)]
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*command, "--shard-size", "10", "--no-progress"], env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    return out


def test_console_pages_show_the_server_and_unload_a_model(
    browser: Any, home: Path, start_server: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    server = start_server(home, "--config", str(config(tmp_path)))
    chat = {"model": "dead-then-local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    answers = [httpx.post(f"{server.url}/v1/chat/completions", json=chat, timeout=300) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3, answers[-1].text  # three failures open dead's circuit
    request_id = answers[0].headers["x-request-id"]

    browser.get(f"{server.url}/ui/#models")
    wait_for(browser, lambda d: MINILM.name in text_of(d, f'tr[data-model="{MINILM.name}"]'), "minilm listed")
    smol_row = f'tr[data-model="{SMOLLM2.name}"]'
    wait_for(browser, lambda d: "loaded" in text_of(d, f"{smol_row} .state"), "smollm2 shown loaded")
    wait_for(browser, lambda d: "held of" in text_of(d, "#body .card"), "a memory bar for the device")
    shoot(browser, tmp_path, "models")
    browser.find_element(By.CSS_SELECTOR, f"{smol_row} button[data-unload]").click()
    wait_for(browser, lambda d: text_of(d, f"{smol_row} .state") == "unloaded", "smollm2 shown unloaded")
    models = httpx.get(f"{server.url}/api/v1/runtime/models", timeout=30).json()["models"]
    assert {m["name"]: m["state"] for m in models}[SMOLLM2.name] == "unloaded"

    browser.get(f"{server.url}/ui/#requests")
    row = f'tr[data-request="{request_id}"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the test's request in the log")
    browser.find_element(By.CSS_SELECTOR, row).click()
    detail = wait_for(browser, lambda d: text_of(d, "#request-detail"), "the request's attempts")
    assert "dead" in detail, detail
    assert "served" in detail, detail
    shoot(browser, tmp_path, "requests")

    browser.get(f"{server.url}/ui/#engines")
    state = wait_for(browser, lambda d: text_of(d, 'tr[data-provider="dead"] .state'), "the dead provider's state")
    assert "cooling down" in state or "unhealthy" in state, state
    assert "available" in text_of(browser, 'tr[data-engine="llamacpp"]')
    shoot(browser, tmp_path, "engines")

    browser.get(f"{server.url}/ui/#overview")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart")) == 4, "four charts")
    logged = httpx.get(f"{server.url}/api/v1/requests/{request_id}", timeout=30).json()
    assert [a["backend"] for a in logged["attempts"]] == ["dead"]
    kind = logged["attempts"][0]["kind"]
    wait_for(browser, lambda d: kind in text_of(d, "#body .card"), f"fallbacks by kind show {kind}")
    shoot(browser, tmp_path, "overview")

    out = batch_job(home, tmp_path)
    browser.get(f"{server.url}/ui/#batch")
    browser.find_element(By.ID, "f-output").send_keys(str(out), "\t")
    summary = wait_for(browser, lambda d: text_of(d, "#batch-summary"), "the batch job's summary")
    assert "40 of 40 rows" in summary, summary
    assert len(browser.find_elements(By.CSS_SELECTOR, "#body table tr")) == 1 + 4  # a header and four shards
    shoot(browser, tmp_path, "batch")


def test_console_asks_for_an_admin_key_and_keeps_it_for_the_session_only(
    browser: Any, home: Path, start_server: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    admin = make_key(home, "ops", "--admin")
    plain = make_key(home, "app")
    server = start_server(home)
    assert httpx.get(f"{server.url}/ui/", timeout=30).status_code == 200  # the page is open, its data is not
    assert httpx.get(f"{server.url}/api/v1/requests", timeout=30).status_code == 401

    browser.get(f"{server.url}/ui/#models")
    wait_for(browser, lambda d: d.find_element(By.ID, "keyform").is_displayed(), "the key form")
    shoot(browser, tmp_path, "key")
    for secret, expected in [(plain, "needs an admin key"), (admin, MINILM.name)]:
        browser.find_element(By.ID, "key").send_keys(secret)
        browser.find_element(By.CSS_SELECTOR, "#keyform button").click()
        where = "#keyerror" if secret == plain else f'tr[data-model="{MINILM.name}"]'
        wait_for(browser, lambda d, w=where, e=expected: e in text_of(d, w), f"{expected!r} shown")
    assert not browser.find_element(By.ID, "keyform").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('inferrelay.adminKey')") == admin
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.execute_script("return document.cookie") == ""
