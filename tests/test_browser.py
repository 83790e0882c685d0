"""Open the built book in headless Chromium: every chapter page has its figures, typeset maths,
a Colab link to its own notebook, and no failed request.

Needs `make html` first and Debian's chromium at /usr/bin/chromium, or another build named by
$CHROMIUM (driven by Playwright; never `playwright install`). `.ci/run` installs Debian's.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"  # `make test-browser CHROMIUM=/path` sets it
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.md"))
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail("the book is not built: run `make html` first")
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: `apt-get install -y chromium` (Debian's package), or CHROMIUM=/path/to/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def visit(browser, url):
    page = browser.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    return page, failed


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page(server, browser, chapter, tmp_path_factory):
    page, failed = visit(browser, f"{server}/book/{chapter}.html")
    assert page.locator("h1").count() >= 1
    # figures: PNG outputs of the notebook, all decoded
    figures = page.locator("img[src*='_images/'], .cell_output img")
    assert figures.count() >= 2, f"{chapter}: expected figures on the page, found {figures.count()}"
    widths = page.eval_on_selector_all(".cell_output img", "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths), f"{chapter}: an image failed to load"
    # maths: MathJax (served offline) typeset the formulas
    page.wait_for_selector("mjx-container", timeout=15000)
    assert page.locator("mjx-container").count() >= 5
    # Colab: the launch button and the badge open this chapter's stored notebook
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{owner_repo}/blob/main/book/{chapter}.ipynb"
    hrefs = page.eval_on_selector_all("a[href*='colab.research.google.com']", "els => els.map(e => e.href)")
    assert target in hrefs, f"{chapter}: no Colab link to {target}; found {hrefs}"
    assert all(h == target for h in hrefs), f"{chapter}: a Colab link points elsewhere: {hrefs}"
    shots = tmp_path_factory.getbasetemp() / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{chapter}.png"), full_page=False)
    assert not failed, f"{chapter}: failed requests: {failed}"
    page.close()


def test_index_and_references(server, browser):
    page, failed = visit(browser, f"{server}/index.html")
    for chapter in CHAPTERS:
        assert page.locator(f"a[href*='{chapter}']").count() >= 1, f"index does not link {chapter}"
    page.close()
    page, failed_refs = visit(browser, f"{server}/book/references.html")
    assert page.locator("dl.citation dt, .citation").count() >= 5, "the bibliography is empty"
    page.close()
    assert not failed and not failed_refs, failed + failed_refs
