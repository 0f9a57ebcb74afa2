"""The chat page in a real browser: `streamlit run` on 127.0.0.1 with the local LLM, driven by
Playwright with Debian's headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import MILVUS_DOCS_EN

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "artifacts" / "browser.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "How do I create a sparse vector index?"
PAYLOAD = [
    "Quarantined zebra payload.",
    "<script>window.__pwned = 1; alert(1)</script>",
    '<img src=x onerror="window.__pwned = 2; alert(2)">',
    "[click me](javascript:window.__pwned=3)",
    '<div onmouseover="window.__pwned=5"><b>raw</b> <iframe src="javascript:window.__pwned=6">'
    "</iframe> html</div>",
]
PLANTED_NAME = "zebra <img src=y onerror=alert(4)>.txt"
DIALOGS: list[str] = []  # messages of every dialog the page opened
ANSWER_TIMEOUT_MS = 300_000  # SmolLM2 on a busy 2-core machine: tens of seconds per answer

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser_db(tmp_path_factory, settings, embedder) -> str:
    """A db of its own for the Streamlit process (Milvus Lite: one process per db): a real
    docs page and a planted text file full of markup."""
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker
    from rag.store import CollectionProfile, MilvusStore

    docs = tmp_path_factory.mktemp("browser_docs")
    shutil.copy(MILVUS_DOCS_EN / "userGuide/indexes/sparse/sparse-inverted-index.md", docs)
    (docs / PLANTED_NAME).write_text("\n".join(PAYLOAD) + "\n")
    uri = str(tmp_path_factory.mktemp("browser_db") / "milvus.db")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    report = Ingestor(store, embedder, chunker).run(sorted(docs.iterdir()))
    store.close()  # the Streamlit process must be the db's only opener
    assert report.chunks_written > 2 and not report.failed
    return uri


@pytest.fixture(scope="module")
def app_url(browser_db, local_llm, tmp_path_factory):
    """`streamlit run ui/app.py` on a free loopback port, on ``browser_db`` and the local LLM."""
    port = free_port()
    env = {
        **os.environ,
        "RAG_MILVUS_URI": browser_db,
        "RAG_LLM_BASE_URL": local_llm,
        "RAG_LLM_MAX_TOKENS": "64",
        "RAG_LLM_PASSAGES": "3",
        "RAG_TOP_K": "5",
    }
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "ui/app.py",
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                "--browser.gatherUsageStats",
                "false",
                "--client.toolbarMode",
                "minimal",
            ],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(app_url):
    """One headless Chromium page on the app, recording dialogs (an ``alert`` would be one)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's Chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.on("dialog", lambda dialog: (DIALOGS.append(dialog.message), dialog.dismiss()))
        page.goto(app_url, wait_until="domcontentloaded")
        page.get_by_placeholder("Ask a question about the documents").wait_for(timeout=180_000)
        yield page
        browser.close()


def ask(page, question: str, turn: int):
    """Type ``question`` in the chat input, press Enter, wait until its turn is complete."""
    box = page.get_by_placeholder("Ask a question about the documents")
    box.fill(question)
    box.press("Enter")
    message = page.locator('[data-testid="stChatMessage"]').nth(2 * turn + 1)
    details = message.get_by_text(re.compile(r"^\d+ passages · "))
    details.wait_for(timeout=ANSWER_TIMEOUT_MS)
    count = int(details.inner_text().split()[0])  # then every passage, down to the last one
    message.locator(f"#t{turn}-passage-{count}").wait_for(timeout=60_000)
    # and until the script run has ended: a click during the last re-render can lose its scroll
    page.locator('[data-testid="stStatusWidgetRunningIcon"]').wait_for(
        state="detached", timeout=ANSWER_TIMEOUT_MS
    )
    return message


def test_question_gets_a_cited_streamed_answer_and_its_passages(page):
    answer = ask(page, QUESTION, 0)

    citations = answer.locator('a[href^="#t0-passage-"]')
    assert citations.count() >= 1, answer.inner_text()
    first = citations.first
    assert first.inner_text().strip() in {f"[{n}]" for n in range(1, 4)}
    number = first.get_attribute("href").rsplit("-", 1)[1]
    assert answer.locator(f"#t0-passage-{number}").count() == 1  # the passage it links to
    assert answer.get_by_text("sparse-inverted-index.md", exact=False).count() >= 1
    assert answer.get_by_text("dense #", exact=False).count() >= 1
    assert answer.get_by_text("Sparse-matched terms in bold", exact=False).count() == 1
    assert answer.locator("strong", has_text="sparse").count() >= 1
    assert page.get_by_text(QUESTION, exact=True).count() >= 1
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.locator("h1").first.evaluate("title => title.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SCREENSHOT))

    first.click()  # a citation scrolls to its passage
    page.wait_for_function(f"location.hash === '#t0-passage-{number}'", timeout=30_000)
    heading = page.locator(f"#t0-passage-{number}")
    page.wait_for_function(
        "id => { const r = document.getElementById(id).getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight; }",
        arg=f"t0-passage-{number}",
        timeout=30_000,
    )
    assert heading.inner_text().startswith(f"[{number}]")


def test_document_markup_is_shown_as_text_and_never_runs(page):
    answer = ask(page, "quarantined zebra payload", 1)

    shown = answer.inner_text()
    for line in [*PAYLOAD, Path(PLANTED_NAME).stem]:
        assert line in shown, (line, shown)
    assert page.evaluate("window.__pwned") is None
    assert DIALOGS == []
    planted = "script, img[src='x'], img[src='y'], a[href^='javascript'], iframe, [onmouseover]"
    assert answer.locator(planted).count() == 0
