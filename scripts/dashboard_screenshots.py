#!/usr/bin/env python3
"""Screenshot every dashboard page into docs/img/dashboard-<page>.png (shown in the README).

Builds the tests' dashboard store (tests/dashboard_store.py: real tiny, traced and serving runs, the
H100 fixture traces, the f74d606 sweeps, a history), serves the app on a free local port and opens
each page in headless Chromium with a selection that shows it at work.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs/img] [--store FOLDER]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def views(info: dict) -> dict[str, str]:
    """page -> URL path and query that shows it with data."""
    cpu = ",".join(info["cpu_runs"])
    hist = info["history"]
    return {
        "runs": f"/?runs={cpu}",
        "compare": f"/compare?base={info['compare'][0]}&cand={info['compare'][1]}",
        "roofline": f"/roofline?runs={info['h100_run']}",
        "trace": f"/trace?runs={info['h100_run']},{info['traced_cpu_run']}&split=hardware",
        "sweeps": f"/sweeps?sweep={info['sweeps'][0]}",
        "history": f"/history?name={hist['name']}&hardware={hist['hardware_id']}&branch=main",
        "serving": f"/serving?runs={info['serving_run']}",
        "energy": "/energy",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(store: Path) -> str:
    """The app on a free loopback port, in a daemon thread; its base URL."""
    from werkzeug.serving import make_server

    from perfbench.dashboard.app import create_app

    port = _free_port()
    server = make_server("127.0.0.1", port, create_app(store).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def browser():
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--store", type=Path, help="folder to build the store in (default: a temp folder)")
    ap.add_argument("--wait", type=float, default=4.0, help="seconds to let each page draw")
    a = ap.parse_args()
    from tests.dashboard_store import build_store

    folder = a.store or Path(tempfile.mkdtemp(prefix="pb-shots-"))
    print(f"building the store in {folder} ...", file=sys.stderr)
    info = build_store(folder)
    base = serve(info["store"])
    driver = browser()
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        for page, path in views(info).items():
            driver.set_window_size(1400, 1000)
            driver.get(base + path)
            time.sleep(a.wait)
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1400, min(max(int(height) + 120, 1000), 2400))  # the whole page, bounded
            time.sleep(1.0)
            out = a.out / f"dashboard-{page}.png"
            driver.save_screenshot(str(out))
            errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            print(f"{out.relative_to(REPO) if out.is_relative_to(REPO) else out}"
                  + (f"  ({len(errors)} console errors: {errors[0]['message'][:200]})" if errors else ""))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
