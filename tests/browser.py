"""Open every page of a generated report in headless Chromium and check it as a reader would.

Talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in NUL on file descriptors 3 and 4), so it needs no Python package, no driver
binary and no network port: only Debian's ``chromium``. :func:`ensure_chromium` installs it
with apt-get when it is missing (the ``-m browser`` test tier calls it).

For every HTML page reachable from ``index.html`` through relative links it records:

- console errors, uncaught exceptions and failed loads (``Runtime``/``Log`` events);
- internal links whose file does not exist or whose ``#fragment`` names no element;
- images that did not load (``naturalWidth == 0``);
- horizontal overflow of the page at the given width (``scrollWidth > innerWidth``);

and saves a screenshot of the first screen and of the whole page (height capped).

Command line (screenshots into SHOTS)::

    python -m tests.browser REPORT_DIR SHOTS [--width 1280]
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--hide-scrollbars", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    for n in CHROMIUM_NAMES:
        p = shutil.which(n)
        if p:
            return p
    return None


def ensure_chromium() -> str:
    """Path of a Chromium binary; installs Debian's ``chromium`` with apt-get if missing."""
    path = find_chromium()
    if path:
        return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError("chromium is not installed and apt-get (as root) is not available; "
                           "install Debian's chromium package")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    path = find_chromium()
    if not path:
        raise RuntimeError("apt-get install chromium did not provide a chromium binary")
    return path


# runs in the child: move the two pipe ends (any numbers, possibly 3 or 4 themselves) above 9
# first, then onto 3 and 4, and exec Chromium with the remaining arguments
_WRAP = ("import fcntl, os, sys\n"
         "r, w = (fcntl.fcntl(int(a), fcntl.F_DUPFD, 10) for a in sys.argv[1:3])\n"
         "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
         "os.execv(sys.argv[3], sys.argv[3:])\n")


class CDPError(RuntimeError):
    pass


class Browser:
    """A headless Chromium driven over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str | None = None, *, timeout: float = 60.0):
        self.binary = binary or ensure_chromium()
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="bayesmeta-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # a tiny Python wrapper puts the child's pipe ends on fds 3 (commands in) and 4
        # (replies out), then becomes Chromium
        cmd = [sys.executable, "-c", _WRAP, str(to_chrome_r), str(from_chrome_w),
               self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(to_chrome_r, from_chrome_w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    # ---- protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CDPError("Chromium closed the DevTools pipe (did it start?)")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        mid = self._id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise CDPError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        for i, e in enumerate(self.events):
            if e.get("method") == method and e.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method and m.get("sessionId") == session:
                return m
            self.events.append(m)

    def drain(self, seconds: float = 0.2) -> None:
        """Collect events that arrive within ``seconds`` (late console messages)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except CDPError:
            pass

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- pages
    def new_page(self, width: int, height: int = 900) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        for dom in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(dom, session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        return session

    def goto(self, session: str, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)

    def evaluate(self, session: str, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, session=session)
        if "exceptionDetails" in r:
            raise CDPError(f"evaluate failed: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def screenshot(self, session: str, path: Path, *, full: bool, width: int,
                   max_height: int = 12000) -> None:
        if full:
            h = int(self.evaluate(session, "document.documentElement.scrollHeight"))
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": min(max(h, 200), max_height),
                       "deviceScaleFactor": 1, "mobile": False}, session=session)
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        path.write_bytes(base64.b64decode(data))
        if full:
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1,
                       "mobile": False}, session=session)


# --------------------------------------------------------------------------------------------
# report check
# --------------------------------------------------------------------------------------------
@dataclass
class PageResult:
    path: Path
    console: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    overflow: str = ""
    height: int = 0
    screenshots: list[Path] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"{self.path.name}: console: {c}" for c in self.console]
        out += [f"{self.path}: broken link {x}" for x in self.broken_links]
        out += [f"{self.path}: image not loaded {x}" for x in self.broken_images]
        if self.overflow:
            out.append(f"{self.path}: horizontal overflow {self.overflow}")
        return out


_PAGE_JS = r"""
(() => {
  if (window.__openDetails) document.querySelectorAll('details').forEach(d => d.open = true);
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id);
  const names = Array.from(document.querySelectorAll('a[name]')).map(e => e.name);
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
  const imgs = Array.from(document.images).map(i => ({src: i.currentSrc.slice(0, 80),
      alt: i.alt, ok: i.complete && i.naturalWidth > 0}));
  const de = document.documentElement;
  const wide = Array.from(document.body.querySelectorAll('*')).filter(e => {
      const r = e.getBoundingClientRect(); return r.right > window.innerWidth + 1;
  }).slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') +
                       (e.className ? '.' + e.className : ''));
  return {ids: ids.concat(names), links, imgs, scrollWidth: de.scrollWidth,
          innerWidth: window.innerWidth, height: de.scrollHeight, wide};
})()
"""


def _console_messages(events: list[dict], session: str) -> list[str]:
    out = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", "")))
                                for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            en = p["entry"]
            out.append(f"{en.get('text', '')} {en.get('url', '')}".strip())
    return out


def check_report(report_dir, shots_dir, *, width: int = 1280, binary: str | None = None,
                 full_page: bool = True) -> list[PageResult]:
    """Visit ``report_dir/index.html`` and every HTML page it links to (transitively);
    return one :class:`PageResult` per page. Screenshots go to ``shots_dir``."""
    root = Path(report_dir).resolve()
    shots = Path(shots_dir)
    shots.mkdir(parents=True, exist_ok=True)
    todo = [root / "index.html"]
    seen: set[Path] = set()
    results: list[PageResult] = []
    ids_of: dict[Path, set[str]] = {}
    pending: list[tuple[Path, str, str]] = []  # (page, target file, fragment) to check at end
    with Browser(binary) as br:
        session = br.new_page(width)
        while todo:
            page = todo.pop(0)
            if page in seen:
                continue
            seen.add(page)
            res = PageResult(page)
            before = len(br.events)
            br.goto(session, page.as_uri())
            closed = br.evaluate(session, _PAGE_JS)  # as a reader first sees it
            res.height = int(closed["height"])
            stem = re.sub(r"[^a-z0-9]+", "-", str(page.relative_to(root)).lower()).strip("-")
            first = shots / f"{stem}-first-screen.png"
            br.screenshot(session, first, full=False, width=width)
            res.screenshots.append(first)
            if full_page:
                whole = shots / f"{stem}-full.png"
                br.screenshot(session, whole, full=True, width=width)
                res.screenshots.append(whole)
            # then with every <details> open: images and widths of the collapsed parts too
            info = br.evaluate(session, "window.__openDetails = true;" + _PAGE_JS)
            br.drain(0.3)
            res.console = _console_messages(br.events[before:], session)
            ids_of[page] = set(info["ids"])
            for state in (closed, info):
                if state["scrollWidth"] > state["innerWidth"] and not res.overflow:
                    res.overflow = (f"scrollWidth {state['scrollWidth']} > "
                                    f"{state['innerWidth']} ({', '.join(state['wide'])})")
            res.broken_images = [f"{i['alt'] or i['src']}" for i in info["imgs"] if not i["ok"]]
            for href in info["links"]:
                u = urlparse(href)
                if u.scheme and u.scheme != "file":
                    continue  # external links are not the report's own files
                target, frag = urldefrag(href)
                tpath = (page.parent / unquote(target)).resolve() if target else page
                if not tpath.exists():
                    res.broken_links.append(href)
                    continue
                if root not in tpath.parents and tpath != root:
                    res.broken_links.append(f"{href} (outside the report)")
                    continue
                if tpath.suffix == ".html":
                    todo.append(tpath)
                    if frag:
                        pending.append((page, str(tpath), unquote(frag)))
            results.append(res)
    by_path = {r.path: r for r in results}
    for page, target, frag in pending:
        if frag not in ids_of.get(Path(target), set()):
            by_path[page].broken_links.append(f"{Path(target).name}#{frag}")
    return results


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.browser",
                                 description="check a bayesmeta report in headless Chromium")
    ap.add_argument("report", help="report directory (holds index.html)")
    ap.add_argument("shots", help="directory for screenshots")
    ap.add_argument("--width", type=int, default=1280, help="viewport width in CSS px (1280)")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    results = check_report(a.report, a.shots, width=a.width)
    problems = [p for r in results for p in r.problems()]
    for r in results:
        print(f"{r.path}: height {r.height} px, {len(r.problems())} problem(s)")
    for p in problems:
        print("PROBLEM", p)
    print(f"{len(results)} pages in {time.monotonic() - t0:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
