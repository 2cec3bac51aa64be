"""Screenshots of every dashboard page at 1440 px and 390 px, into docs/screenshots/ (PNG).

Usage: python tools/dashboard_screenshots.py --lake LAKE [--build] [--out docs/screenshots]

With --build, first makes LAKE from synthetic data (3,000 products, 120,000 clickstream events over 40 days,
6,000 retail lines over 120 days from 2011-01-01, seed 5: the serving tests' lake) with the shipped `daily`
job; the committed screenshots were made so. Then serves LAKE (or any built lake, e.g. `make demo`'s) on a
loopback port with the real app under
uvicorn, opens each page in Debian's chromium through Playwright and saves `<page>-<width>.png`
(full page). Not a test: it asserts nothing, it only draws.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from shoplake.config import Settings
from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.runner import run_job
from shoplake.lake import Lake
from shoplake.serve.app import create_app
from shoplake.serve.pages import PAGES
from shoplake.synth import generate

CHROMIUM = "/usr/bin/chromium"
WIDTHS = (1440, 390)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(lake: Path) -> None:
    """The serving tests' small lake at `lake` (its landing and generated files beside it)."""
    root = lake.parent
    landing, data = root / "landing", root / "data"
    generated = [generate("products", data, rows=3000, seed=5),
                 generate("clickstream", data, rows=120_000, seed=5, days=40, dirty_fraction=0.002),
                 generate("retail", data, rows=6000, seed=5, start=dt.date(2011, 1, 1), days=120,
                          dirty_fraction=0.002)]
    for source, result in zip(("products", "clickstream", "retail"), generated, strict=True):
        (landing / source).mkdir(parents=True, exist_ok=True)
        shutil.copy(result.files[0], landing / source)
    settings = Settings(lake=lake)
    built = Lake(settings)
    result = run_job(built, load_jobs(settings, built.catalog, cwd=root).get("daily"), landing=str(landing),
                     isolation="inline")
    print(f"built {lake}: {result.status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--build", action="store_true", help="first build LAKE from synthetic data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    args = parser.parse_args()
    if args.build:
        build(args.lake)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(lake=args.lake)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            for width in WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                for key in PAGES:
                    page.goto(f"http://127.0.0.1:{port}/{'' if key == 'overview' else key}", wait_until="load")
                    page.wait_for_function("() => Array.from(document.querySelectorAll('.chart'))"
                                           ".every(el => el.classList.contains('js-plotly-plot'))", timeout=60_000)
                    target = args.out / f"{key}-{width}.png"
                    page.screenshot(path=str(target), full_page=True)
                    print(f"{target} ({target.stat().st_size / 1e3:.0f} kB)")
                context.close()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)


if __name__ == "__main__":
    main()
