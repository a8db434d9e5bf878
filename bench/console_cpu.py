"""What the console's polling costs the server: its CPU time over a window with no browser, then over the same
window with one headless chromium on each console page (docs/console.md).

    python bench/console_cpu.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
CHAT = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}


def cpu_seconds(process: psutil.Process) -> dict[int, float]:
    """User and system time of the server and of each engine worker it runs, by pid."""
    seconds = {}
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def window(process: psutil.Process, seconds: float) -> dict[str, float]:
    """Cores used over the window: by the server process, and by it and its workers (a worker that exits counts
    nothing for the window, one that starts counts all its time)."""
    before, start = cpu_seconds(process), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(process), time.monotonic() - start
    server = (after.get(process.pid, 0.0) - before.get(process.pid, 0.0)) / elapsed
    total = sum(max(0.0, used - before.get(pid, 0.0)) for pid, used in after.items()) / elapsed
    return {"server": round(server, 5), "with_workers": round(total, 5)}


def browser() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    (home / "cache").symlink_to(REPO / ".cache" / "test-home" / "cache")
    url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "INFERRELAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inferrelay.cli", "serve", "--port", str(args.port), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for _ in range(20):  # a loaded model and rows in the request log for the pages to show
            httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=300).raise_for_status()
        process = psutil.Process(server.pid)
        result: dict[str, object] = {"seconds": args.seconds, "cores": os.cpu_count()}
        result["idle_core_share"] = window(process, args.seconds)
        driver = browser()
        try:
            for page in ("overview", "engines", "models", "requests"):
                driver.get(f"{url}/ui/#{page}")  # type: ignore[attr-defined]
                time.sleep(3)
                result[f"{page}_core_share"] = window(process, args.seconds)
        finally:
            driver.quit()  # type: ignore[attr-defined]
        print(json.dumps(result, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
