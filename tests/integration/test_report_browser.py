"""The HTML report in a real headless Chromium: no console errors, no network, timeline and trend on screen.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (fds 3 and
4, NUL-separated JSON), so the test needs nothing beyond the standard library: no websocket
client, no Selenium, no Playwright browser download. The screenshot is decoded with zlib to
check real pixels (the verdict banner, green and red trend bars), not just that a file exists.

Chromium comes from Debian (``apt-get install -y chromium``). Without it this test FAILS:
the acceptance of the report is that it renders in a browser, and a skip would hide that.
Set REBUILD_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rebuild.drills import report
from tests.unit.test_report import sample_history, sample_result

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
WIDTH, HEIGHT = 1200, 900

# Runs in a throwaway interpreter between fork and exec of Chromium: put the two pipe ends
# on fds 3 and 4, where --remote-debugging-pipe expects them, without clobbering either.
EXEC_ON_FDS = (
    "import fcntl, os, sys\n"
    "a = fcntl.fcntl(int(sys.argv[1]), fcntl.F_DUPFD, 10)\n"
    "b = fcntl.fcntl(int(sys.argv[2]), fcntl.F_DUPFD, 10)\n"
    "os.dup2(a, 3); os.dup2(b, 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def chromium() -> str:
    for c in (os.environ.get("CHROMIUM", ""), *CHROMIUM_CANDIDATES):
        if c and os.access(c, os.X_OK):
            return c
    found = shutil.which("chromium")
    if found:
        return found
    pytest.fail(
        "Chromium is not installed, so the HTML report cannot be checked in a browser. "
        "Install it: `apt-get update && apt-get install -y chromium` (or set CHROMIUM=/path/to/chrome)"
    )


class DevTools:
    """A minimal Chrome DevTools protocol client over the debugging pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], wfd: int, rfd: int, log: Path) -> None:
        self.proc, self.wfd, self.rfd, self.log = proc, wfd, rfd, log
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from Chromium; its log ends with:\n{self._tail()}")
            ready, _, _ = select.select([self.rfd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the debugging pipe (exit {self.proc.poll()}):\n{self._tail()}")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 60) -> Any:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.wfd, data) :]
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, name: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == name:
                return e
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == name:
                return m


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    exe = chromium()
    cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
    res_r, res_w = os.pipe()  # Chromium writes answers on fd 4; we read them
    log = tmp_path / "chromium.log"
    argv = [exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", EXEC_ON_FDS, str(cmd_r), str(res_w), *argv],
            pass_fds=(cmd_r, res_w),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    os.close(cmd_r)
    os.close(res_w)
    dt = DevTools(proc, cmd_w, res_r, log)
    try:
        yield dt
    finally:
        try:
            dt.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        os.close(cmd_w)
        os.close(res_r)


def open_page(dt: DevTools, url: str) -> str:
    target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session: str = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        dt.call(f"{domain}.enable", session=session)
    dt.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    dt.events.clear()
    dt.call("Page.navigate", {"url": url}, session=session)
    dt.wait_event("Page.loadEventFired")
    return session


def problems(dt: DevTools, page_url: str) -> list[str]:
    """Console errors, uncaught exceptions, CSP violations and any request that is not the page itself."""
    out = []
    for e in dt.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            out.append(f"Uncaught: {details.get('text')} {details.get('exception', {}).get('description', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
        elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
            out.append(f"log {p['entry']['level']} ({p['entry'].get('source')}): {p['entry'].get('text')}")
        elif m == "Network.requestWillBeSent" and p["request"]["url"] != page_url:
            out.append(f"network request: {p['request']['url']}")
    return out


def screenshot(dt: DevTools, session: str, path: Path, *, full: bool) -> bytes:
    if full:
        size = dt.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        dt.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": int(size["height"]) + 1, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
    import base64

    png = base64.b64decode(dt.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
    path.write_bytes(png)
    keep = os.environ.get("REBUILD_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return png


# --------------------------------------------------------------------------- PNG decoding (stdlib only)


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of raw pixel bytes, bytes per pixel) of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def pixel(rows: list[bytes], bpp: int, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = rows[y][x * bpp : x * bpp + 3]
    return r, g, b


def count_colour(rows: list[bytes], bpp: int, rgb: tuple[int, int, int]) -> int:
    target = bytes(rgb)
    n = 0
    for row in rows:
        for x in range(0, len(row), bpp):
            if row[x : x + 3] == target:
                n += 1
    return n


def hex_rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


# --------------------------------------------------------------------------- tests


def render(tmp_path: Path, result: dict[str, Any], history: list[dict[str, Any]]) -> Path:
    paths = report.write_reports(result, tmp_path / "report", history=history)
    return paths["html"]


def test_report_renders_in_chromium_with_timeline_and_trend(tmp_path: Path, browser: DevTools) -> None:
    html = render(tmp_path, sample_result(), sample_history(10))
    url = html.as_uri()
    session = open_page(browser, url)
    facts = browser.call(
        "Runtime.evaluate",
        {
            "expression": """(() => {
                const box = s => { const e = document.querySelector(s); if (!e) return null;
                                   const r = e.getBoundingClientRect(); return [r.width, r.height]; };
                return {
                  verdict: document.querySelector('#verdict').textContent,
                  timelineRects: document.querySelectorAll('#timeline svg rect').length,
                  trendBars: document.querySelectorAll('#trend svg rect.bar').length,
                  failBars: document.querySelectorAll('#trend svg rect.bar.fail').length,
                  timelineBox: box('#timeline svg'),
                  trendBox: box('#trend svg'),
                  scripts: document.scripts.length,
                  overflowX: document.documentElement.scrollWidth > window.innerWidth,
                };
            })()""",
            "returnByValue": True,
        },
        session=session,
    )["result"]["value"]
    assert facts["verdict"] == "rebuild drill drill-ab12cd: PASSED"
    assert facts["timelineRects"] == 12  # 6 phases: the stacked bar and the Gantt rows
    assert facts["trendBars"] == 11 and facts["failBars"] == 2
    assert facts["timelineBox"][0] > 800 and facts["timelineBox"][1] > 150
    assert facts["trendBox"][0] > 800 and facts["trendBox"][1] > 200
    assert facts["scripts"] == 0 and not facts["overflowX"]
    assert problems(browser, url) == []

    png = screenshot(browser, session, tmp_path / "report-viewport.png", full=False)
    assert len(png) > 20_000
    width, height, rows, bpp = decode_png(png)
    assert (width, height) == (WIDTH, HEIGHT)
    assert pixel(rows, bpp, 5, 20) == (0x15, 0x80, 0x3D)  # the green verdict banner
    assert len({pixel(rows, bpp, x, y) for y in range(0, height, 9) for x in range(0, width, 9)}) > 20

    full = screenshot(browser, session, tmp_path / "report-full.png", full=True)
    _, fh, frows, fbpp = decode_png(full)
    assert fh > HEIGHT
    # the timeline's phase colours and the trend's green and red bars are really painted
    for colour in report.PALETTE[:6]:
        assert count_colour(frows, fbpp, hex_rgb(colour)) > 100, colour
    assert count_colour(frows, fbpp, hex_rgb(report.GREEN)) > 2000
    assert count_colour(frows, fbpp, hex_rgb(report.RED)) > 200
    assert problems(browser, url) == []


def test_failed_report_renders_red_with_failures_and_no_script_runs(tmp_path: Path, browser: DevTools) -> None:
    result = sample_result(passed=False)
    html = render(tmp_path, result, sample_history(3))
    url = html.as_uri()
    session = open_page(browser, url)
    facts = browser.call(
        "Runtime.evaluate",
        {
            "expression": """({
                rows: [...document.querySelectorAll('#failures tbody tr')]
                      .map(r => r.cells[0].textContent + ' ' + r.cells[1].textContent),
                hostile: document.querySelector('#failures tbody tr:nth-child(2) td:nth-child(3)').textContent,
                injected: document.querySelectorAll('#failures script').length,
            })""",
            "returnByValue": True,
        },
        session=session,
    )["result"]["value"]
    assert facts["rows"] == [
        "Deployment/shop/cart apps/base/cart/deployment.yaml:12",
        "ConfigMap/shop/settings apps/base/cart/configmap.yaml:3",
    ]
    assert facts["hostile"].startswith("<script>alert('x')</script>") and facts["injected"] == 0
    assert problems(browser, url) == []
    png = screenshot(browser, session, tmp_path / "report-failed.png", full=True)
    _, _, rows, bpp = decode_png(png)
    assert pixel(rows, bpp, 5, 20) == (0xB9, 0x1C, 0x1C)  # the red verdict banner
    assert count_colour(rows, bpp, hex_rgb(report.RED)) > 500  # failed verify phase on the timeline
