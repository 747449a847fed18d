"""``report.html``: the renderer's escaping and tables, then the real page opened in headless Chromium.

The browser tests drive Debian's ``chromium`` over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
null-terminated JSON on file descriptors 3 and 4), so they need no Python package beyond the standard
library. They check what a reader sees: every section heading and nav link, every table, every image
decoded (``naturalWidth > 0``), no console error, and no request that is not the file itself or a
``data:`` URI. They skip when ``chromium`` is not on PATH, unless ``QUINTET_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from quintet import demo as demo_mod
from quintet.cli import main
from quintet.report import benchmark_report_html, json_to_html, markdown_to_html, render_page

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe",
]  # fmt: skip
PROBE = """(async () => {
  if (document.readyState !== 'complete') await new Promise(r => addEventListener('load', r));
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return {
    url: document.URL,
    title: document.title,
    h2: [...document.querySelectorAll('section > h2')].map(h => h.textContent),
    ids: [...document.querySelectorAll('section')].map(s => s.id),
    nav: [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href')),
    tables: [...document.querySelectorAll('table')].map(t => [...t.querySelectorAll('th,td')].map(c => c.textContent)),
    images: imgs.map(i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight})),
    scripts: document.scripts.length,
    text: document.body.innerText,
  };
})()"""


# ---------------------------------------------------------------------------------------------------- browser


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10, so that bash's ``3<&N 4>&M`` cannot overwrite one with the other
    (dash takes single-digit descriptors only: the redirection runs in bash)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (stdlib only)."""

    def __init__(self, exe: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout, self._id, self._buf, self.events = timeout, 0, b"", []
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        to_child_r, from_child_w = (_high_fd(fd) for fd in (to_child_r, from_child_w))
        # the browser reads commands on fd 3 and writes replies on fd 4
        shell = f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w}'
        args = [*FLAGS, f"--user-data-dir={profile}", "about:blank"]
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [shutil.which("bash") or "bash", "-c", shell, exe, *args], pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(
                    f"chromium closed the pipe (exit code {self.proc.poll()}): {self.log_tail()}"
                )
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command; keep the events that arrive before its reply in ``self.events``."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise RuntimeError(
                f"chromium is gone (exit code {self.proc.poll()}): {self.log_tail()}"
            ) from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def log_tail(self) -> str:
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return " | ".join(ln for ln in lines if "dbus" not in ln)[-800:]

    def wait_event(self, method: str, since: int = 0) -> dict[str, Any]:
        """The first ``method`` event at or after ``self.events[since]`` (read from the pipe until it comes)."""
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events[since:]):
            self.events.append(self._read_message(deadline))
        return next(e for e in self.events[since:] if e.get("method") == method)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (failed loads, CSP violations)."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.append(p["exceptionDetails"].get("text", "exception"))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def open_page(path: Path, tmp_path: Path) -> dict[str, Any]:
    """Load ``path`` in headless Chromium; what the page shows, plus ``errors`` and ``requests``."""
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("QUINTET_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "chromium is not on PATH and QUINTET_REQUIRE_BROWSER=1 (CI installs Debian's chromium)"
            )
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium); the browser test needs it")
    browser = Chromium(exe, tmp_path / f"profile-{path.stem}")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=sid)
        browser.events.clear()
        url = path.resolve().as_uri()
        browser.send("Page.navigate", {"url": url}, session=sid)
        browser.wait_event("Page.loadEventFired")  # Page was enabled after about:blank had loaded
        res = browser.send(
            "Runtime.evaluate",
            {"expression": PROBE, "awaitPromise": True, "returnByValue": True},
            session=sid,
        )
        page = res["result"]["value"]
        assert page["url"] == url, f"the probe ran on {page['url']}, not on {url}"
        page["errors"] = console_errors(browser.events)
        page["requests"] = [
            e["params"]["request"]["url"]
            for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        return page
    finally:
        browser.close()


# ---------------------------------------------------------------------------------------------------- fixtures


def _png(path: Path, width: int, height: int) -> Path:
    """A PNG written without matplotlib (for pages that need an image and nothing else)."""
    raw = b"".join(b"\0" + bytes([(x * 7) % 256 for x in range(width)]) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


SECTION_MODULE = '''
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from quintet.demo import DemoSection


def demo(out_dir: Path, quick: bool) -> DemoSection:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [3, 1, 2], label="loss")
    ax.legend()
    png = out_dir / "curve.png"
    fig.savefig(png, dpi=50)
    plt.close(fig)
    md = """Synthetic section: <script>alert("x")</script> must show as text, `code_span` & **bold**.

| model | MAE (Å) | ratio |
|---|---|---|
| dummy | 0.125 | 1.00 |
| ours <b>x</b> | 0.031 | 0.25 |
"""
    return DemoSection(title="Synthetic <ok> section", markdown=md, images=[png], metrics={"mae": 0.031})


def demo_failing(out_dir: Path, quick: bool) -> DemoSection:
    raise RuntimeError("deliberate failure <b>")
'''


@pytest.fixture
def synthetic_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``run_demo`` on three synthetic sections (one ok with a table and a plot, one failing, one skipped)."""
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / "synthetic_section.py").write_text(SECTION_MODULE, encoding="utf-8")
    (pkg / "synthetic_failing.py").write_text(SECTION_MODULE.replace("def demo(", "def _ok(").replace(
        "def demo_failing(", "def demo("), encoding="utf-8")  # fmt: skip
    monkeypatch.syspath_prepend(str(pkg))
    sections = {
        "good": "synthetic_section",
        "bad": "synthetic_failing",
        "absent": "no_such_module_for_quintet",
    }
    monkeypatch.setattr(demo_mod, "SECTIONS", sections)
    report = demo_mod.run_demo(tmp_path / "demo_out")
    sys.modules.pop("synthetic_section", None)
    sys.modules.pop("synthetic_failing", None)
    return report


# ---------------------------------------------------------------------------------------------------- renderer


def test_markdown_is_escaped_and_tables_are_tables(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 3, 2)
    md = "# T\n\nhi <img src=x onerror=alert(1)> & `<b>`\n\n| a | b |\n|---|---:|\n| <i>x</i> | 1.5 |\n\n![cap](a.png)\n"
    out = markdown_to_html(md, tmp_path)
    assert "<img src=x" not in out and "&lt;img src=x onerror=alert(1)&gt; &amp;" in out
    assert "<code>&lt;b&gt;</code>" in out
    assert "<thead><tr><th>a</th><th>b</th></tr></thead>" in out
    assert '<td>&lt;i&gt;x&lt;/i&gt;</td><td class="num">1.5</td>' in out
    assert 'src="data:image/png;base64,' in out and "<figcaption>cap</figcaption>" in out
    assert '<p class="missing">image' in markdown_to_html("![gone](missing.png)", tmp_path)
    assert "javascript" not in markdown_to_html("[x](javascript:alert(1))")


def test_json_tables_group_records_and_escape_keys() -> None:
    data = {"<k>": 1.23456789, "mae": {"a": 1.0, "b": 2.0}, "time": {"a": 3.0, "b": 4.0},
            "runs": {"r1": {"x": 1, "y": {"z": 2}}, "r2": {"x": 3, "y": {"z": 4}}}}  # fmt: skip
    out = json_to_html(data)
    assert '<th>&lt;k&gt;</th><td class="num">1.235</td>' in out
    assert "<h3>mae, time</h3>" in out and '<th>a</th><td class="num">1</td><td class="num">3</td>' in out
    assert "<th>y.z</th>" in out and '<th>r2</th><td class="num">3</td><td class="num">4</td>' in out


def test_few_wide_records_are_turned_into_columns() -> None:
    wide = {"cora": {f"m{i}": i for i in range(11)}, "citeseer": {f"m{i}": 10 * i for i in range(11)}}
    out = json_to_html(wide)
    assert "<thead><tr><th></th><th>cora</th><th>citeseer</th></tr></thead>" in out
    assert '<tr><th>m3</th><td class="num">3</td><td class="num">30</td></tr>' in out
    narrow = json_to_html({"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 4}})
    assert "<thead><tr><th></th><th>x</th><th>y</th></tr></thead>" in narrow


def test_page_has_nav_and_unique_section_ids() -> None:
    from quintet.report import HtmlSection

    secs = [
        HtmlSection("A b", "<p>1</p>"),
        HtmlSection("A b", "<p>2</p>"),
        HtmlSection("DeepRelax — one (x)", ""),
    ]
    page = render_page("<t>", secs)
    assert '<a href="#a-b">A b</a><a href="#a-b-2">A b</a><a href="#deeprelax-one-x">DeepRelax</a>' in page
    assert "<h2>DeepRelax — one (x)</h2>" in page
    assert "<title>&lt;t&gt;</title>" in page and "default-src 'none'" in page


def test_report_verb_errors_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    assert "no benchmark results (*.json)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "medaugment.json").write_text('{"img_per_s": 812.5}', encoding="utf-8")
    _png(tmp_path / "medaugment_grid.png", 4, 4)
    (tmp_path / "other.json").write_text("{not json", encoding="utf-8")
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"outputs: {tmp_path / 'out'}"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<a href="#medaugment">medaugment</a><a href="#other">other</a>' in page
    assert "812.5" in page and "not valid JSON" in page and page.count("<img ") == 1


# ---------------------------------------------------------------------------------------------------- browser


def test_demo_report_html_in_chromium(synthetic_demo: Path, tmp_path: Path) -> None:
    html_path = synthetic_demo.with_suffix(".html")
    assert html_path.is_file(), "run_demo did not write report.html next to report.md"
    page = open_page(html_path, tmp_path)
    assert page["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in page["requests"]), page["requests"]
    assert page["title"] == "quintet demo report"
    assert page["h2"] == ["Synthetic <ok> section", "bad", "absent"]
    assert page["nav"] == [f"#{i}" for i in page["ids"]] and len(set(page["ids"])) == 3
    assert len(page["tables"]) == 1
    assert page["tables"][0] == [
        "model",
        "MAE (Å)",
        "ratio",
        "dummy",
        "0.125",
        "1.00",
        "ours <b>x</b>",
        "0.031",
        "0.25",
    ]
    assert page["images"] == [{"alt": "curve", "width": 200, "height": 150}]  # 4x3 in at 50 dpi
    assert page["scripts"] == 0 and '<script>alert("x")</script> must show as text' in page["text"]
    assert "Failed: deliberate failure <b>" in page["text"] and "Skipped:" in page["text"]


def test_benchmark_report_html_in_chromium(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "results"
    pngs = sorted(results.glob("*.png"))
    if not pngs:
        pytest.skip("no benchmark PNGs in benchmarks/results")
    out = tmp_path / "bench.html"
    out.write_text(benchmark_report_html(results), encoding="utf-8")
    page = open_page(out, tmp_path)
    assert page["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in page["requests"]), page["requests"]
    for system in ("leignn", "deeprelax", "definet", "fedaux", "medaugment"):
        if (results / f"{system}.json").is_file():
            assert system in page["h2"]
    assert page["nav"] == [f"#{i}" for i in page["ids"]]
    assert len(page["images"]) == len(pngs) and all(i["width"] > 0 for i in page["images"]), page["images"]
    assert len(page["tables"]) >= len(list(results.glob("*.json")))


def test_the_browser_check_sees_broken_pages(tmp_path: Path) -> None:
    """The checks above can fail: a broken image, a console error and a remote load are all seen."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><section><h2>x</h2></section>'
        '<img alt="broken" src="data:image/png;base64,AAAA"><img alt="remote" src="http://127.0.0.1:9/x.png">'
        "<script>console.error('boom')</script></body></html>",
        encoding="utf-8",
    )
    page = open_page(bad, tmp_path)
    assert any("boom" in e for e in page["errors"]), page["errors"]
    assert [i["width"] for i in page["images"]] == [0, 0]
    assert any(u.startswith("http://127.0.0.1:9/") for u in page["requests"])
