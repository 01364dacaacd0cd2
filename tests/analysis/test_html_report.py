"""The report folder: Markdown/CSV tables, comparison, and the HTML page driven in Chromium."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from societies.analysis.html_report import flipped, script_json, write_report
from societies.errors import UserError
from tests.report_fixtures import XSS, make_run_dir, standard_units, unit


def test_tables_csv_and_files(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    html = write_report([run], run / "report")
    out = run / "report"
    assert html == out / "report.html"
    md = (out / "report.md").read_text()
    # Round 0 of S3/00: agents right 2+1+0 of 9 turns = 33.3%; majority right in q0 only.
    assert "### society S3 · strategy 00 · 3 units (0 failed)" in md
    assert "| 0 | 3 | 33.3% | 33.3% |" in md
    assert "| 2 | 3 | 66.7% | 66.7% |" in md
    rows = list(csv.DictReader(io.StringIO((out / "rounds.csv").read_text())))
    assert [(r["strategy"], r["round"]) for r in rows] == [
        ("00", "0"), ("00", "1"), ("00", "2"), ("11", "0"), ("11", "1"), ("11", "2")]
    assert float(rows[2]["mean_accuracy"]) == pytest.approx(6 / 9)
    for name in ("mean_accuracy", "majority_accuracy", "n_clusters", "conformity", "behaviours",
                 "cost", "graph-S3", "influence"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")


async def test_report_and_show_of_a_scripted_run(tmp_path: Path) -> None:
    from societies.analysis.show import show_unit
    from societies.backends.scripted import ScriptedBackend
    from tests.helpers import config, make_run, tagged_reply

    run = make_run(tmp_path / "run", config(strategies=["00", "11"]),
                   ScriptedBackend(tagged_reply))
    await run.execute(progress=False)
    out = write_report([tmp_path / "run"], tmp_path / "run" / "report")
    graph = (out.parent / "graph-S2.svg").read_text()  # drawn from config.json's edges
    assert all(f">agent{i}<" in graph for i in (1, 2, 3))
    md = (out.parent / "report.md").read_text()
    assert "### society S2 · strategy 00 · 2 units (0 failed)" in md
    assert "### society S2 · strategy 11 · 2 units (0 failed)" in md
    text = show_unit(tmp_path / "run", "S2/00/0/arithmetic-0-0")
    assert "  agent1 · debate · saw agent2, agent3" in text
    assert "      | <agent2@1> The answer is 1." in text
    assert "round 2 · majority 2" in text


def test_html_is_self_contained_and_embeds_data_safely(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    page = write_report([run], tmp_path / "out").read_text()
    # No network resources: every src/href is a data URL or a fragment.
    assert not re.findall(r'(?:src|href)="(?!data:|#)', page)
    assert "http://" not in page.replace("http://www.w3.org", "")
    # The reply's markup only appears inside the JSON block, with every "<" escaped.
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                      page, re.S)
    assert block and "<" not in block.group(1)
    data = json.loads(block.group(1))
    assert XSS in [t["reply"] for u in data["units"] for r in u["rounds"] for t in r]
    assert page.count("<script") == 2  # the data block and the page's own script
    assert page.count('src="data:image/svg+xml;base64,') >= 6


def test_page_keeps_at_most_max_units_transcripts(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    page = write_report([run], tmp_path / "out", max_units=2).read_text()
    block = re.search(r'id="report-data">(.*?)</script>', page, re.S)
    assert block
    data = json.loads(block.group(1))
    assert [u["id"] for u in data["units"]] == ["S3/00/0/q0", "S3/00/0/q1"]
    assert data["left_out"] == 3
    # The tables still count every unit.
    assert "S3 · strategy 11 · 2 units" in page


def test_script_json_cannot_close_the_script_element() -> None:
    text = script_json({"reply": "</script><!-- x"})
    assert "</" not in text and "<!--" not in text
    assert json.loads(text) == {"reply": "</script><!-- x"}


def test_flipped_means_the_majority_answer_changed() -> None:
    units = {u.unit_id: u for u in standard_units()}
    assert [flipped(units[f"S3/00/0/q{i}"]) for i in range(3)] == [False, True, False]
    assert flipped(units["S3/11/0/q1"])


def test_two_runs_compared_side_by_side(tmp_path: Path) -> None:
    a = make_run_dir(tmp_path / "a")
    # Run b: q2 of strategy 00 answered right in the last round (one agent more right).
    units = [u for u in standard_units() if u.unit_id != "S3/00/0/q2"]
    units.append(unit([["B", "B", "C"], ["B", "B", "B"], ["A", "B", "B"]], qid="q2"))
    b = make_run_dir(tmp_path / "b", units)
    out = tmp_path / "cmp"
    page = write_report([a, b], out).read_text()
    md = (out / "report.md").read_text()
    # 6/9 → 7/9 correct turns in round 2: 66.7% vs 77.8%, +11.1 points.
    assert "| S3 | 00 | 2 | 66.7% | 77.8% | +11.1 pt |" in md
    assert "+11.1 pt" in page and 'id="comparison"' in page
    # Paired tests per group at the last round: strategy 00 has 3 pairs, none discordant in
    # majority correctness (q2's majority stays wrong), so McNemar's p is 1.
    row = next(ln for ln in md.splitlines() if ln.startswith("| b | S3 | 00 |"))
    assert row.split(" | ")[3:10] == ["2", "3", "66.7%", "66.7%", "0", "0", "1"]
    assert 'id="paired"' in page
    assert {r["run"] for r in csv.DictReader(io.StringIO((out / "rounds.csv").read_text()))} \
        == {"a", "b"}


def test_bad_run_dir_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    with pytest.raises(UserError, match="not a run directory"):
        write_report([make_run_dir(tmp_path / "ok"), tmp_path / "empty"], out)
    assert not out.exists()
    with pytest.raises(UserError, match="at least one"):
        write_report([], out)


# ---------------------------------------------------------------- headless Chromium (CDP)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary; installed with apt when missing and we are root, else a skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}  # never wait on a prompt
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                       capture_output=True, timeout=600, env=env)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed (and apt-get as root is not available)")
    return found


class Page:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=10)
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def js(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-port=0",
         "--window-size=1200,900", "about:blank"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        port = None
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            match = re.search(r"DevTools listening on ws://[\d.]+:(\d+)/", line)
            port = int(match.group(1)) if match else None
        assert port, "chromium did not report its DevTools port"
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _open(port: int, url: str) -> tuple[Any, Any, Page]:
    import aiohttp

    session = aiohttp.ClientSession()
    async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
        targets = await resp.json()
    target = next(t for t in targets if t["type"] == "page")
    ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
    page = Page(ws)
    await page.call("Page.enable")
    await page.call("Page.navigate", url=url)
    for _ in range(100):  # the page script runs at the end of the body
        if await page.js("document.readyState === 'complete' && "
                         "document.querySelectorAll('#transcript tr').length > 0"):
            break
        await asyncio.sleep(0.1)
    return session, ws, page


@pytest.mark.real
async def test_transcript_browser_in_chromium(tmp_path: Path,
                                              browser: tuple[Any, int]) -> None:
    run = make_run_dir(tmp_path / "run")
    html = write_report([run], tmp_path / "out")
    session, ws, page = await _open(browser[1], html.as_uri())
    try:
        options = await page.js("[...document.querySelectorAll('#sel-unit option')]"
                                ".map(o => o.value)")
        assert options == ["S3/00/0/q0", "S3/00/0/q1", "S3/00/0/q2"]
        # Click into q1's transcript: pick it in the select, as a user does, and fire change.
        await page.js("const s = document.getElementById('sel-unit'); s.value = 'S3/00/0/q1';"
                      "s.dispatchEvent(new Event('change'))")
        rows = await page.js("[...document.querySelectorAll('#transcript tr.agent-row')]"
                             ".map(r => r.children.length)")
        assert rows == [4, 4, 4]  # three agents: a name cell and three rounds each
        meta = await page.js("document.getElementById('unit-meta').textContent")
        assert meta.startswith("S3/00/0/q1 · gold A")
        # a2 answered A (correct) in round 0: a green cell; a0 answered B: a red one.
        colour = ("getComputedStyle(document.querySelectorAll('#transcript tr.agent-row')[{}]"
                  ".children[1]).backgroundColor")
        assert await page.js(colour.format(2)) == "rgb(200, 240, 200)"
        assert await page.js(colour.format(0)) == "rgb(246, 202, 202)"
        cell = ("document.querySelectorAll('#transcript tr.agent-row')[1].children[2]")
        assert await page.js(cell + ".querySelector('pre.reply').textContent") == XSS
        assert await page.js(cell + ".querySelector('.meta').textContent") == \
            "debate · saw a0, a2"
        assert await page.js(cell + ".querySelector('code.raw').textContent") == "(B)"
        assert await page.js("document.querySelectorAll('#transcript img, #transcript "
                             "script').length") == 0
        await asyncio.sleep(0.3)  # give an <img onerror> time to fire, had it been parsed
        assert await page.js("typeof window.pwned") == "undefined"
        # The flipped filter: click the checkbox; only q1 of strategy 00 remains.
        await page.js("document.getElementById('only-flipped').click()")
        assert await page.js("[...document.querySelectorAll('#sel-unit option')]"
                             ".map(o => o.value)") == ["S3/00/0/q1"]
        await page.js("const t = document.getElementById('sel-strategy'); t.value = '11';"
                      "t.dispatchEvent(new Event('change'))")
        assert await page.js("document.getElementById('sel-unit').value") == "S3/11/0/q1"
        # A link with #unit=... opens that transcript on load.
        await page.call("Page.navigate", url="about:blank")
        await page.call("Page.navigate", url=html.as_uri() + "#unit=S3/11/0/q0")
        for _ in range(50):
            if await page.js("document.readyState === 'complete' && (document.getElementById("
                             "'unit-meta')?.textContent || '').startsWith('S3/11/0/q0')"):
                break
            await asyncio.sleep(0.1)
        assert await page.js("document.getElementById('sel-strategy').value") == "11"
        shot = await page.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        (tmp_path / "shot.png").write_bytes(png)
        import matplotlib.image as mpimg

        pixels = mpimg.imread(tmp_path / "shot.png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels[..., :3].std() > 0.05  # not a blank page
    finally:
        await ws.close()
        await session.close()


def test_wheel_ships_the_templates(tmp_path: Path) -> None:
    import zipfile

    build = pytest.importorskip("hatchling.builders.wheel")
    root = Path(__file__).resolve().parents[2]
    wheel = next(iter(build.WheelBuilder(str(root)).build(directory=str(tmp_path),
                                                          versions=["standard"])))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("societies/analysis/templates/report.html.j2",
                 "societies/analysis/templates/report.js",
                 "societies/analysis/html_report.py", "societies/analysis/figures.py",
                 "societies/analysis/show.py"):
        assert name in names
