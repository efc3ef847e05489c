"""The inspector's page in a real browser: Debian's chromium, driven by playwright (no browser
download: it is launched from its path). Open the page, send requests through a real tunnel, and
see them arrive without a reload, open one, read its JSON, replay it. A failing test leaves a
screenshot in tests/out/."""
import os
import shutil

import pytest

import helpers

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUT = os.path.join(helpers.ROOT, "tests", "out")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test-setup installs it)")


@pytest.fixture
def page(request):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 800})
        tab.set_default_timeout(10000)
        try:
            yield tab
        finally:
            report = getattr(request.node, "rep_call", None)     # set by conftest's report hook
            if report is not None and report.failed:
                os.makedirs(OUT, exist_ok=True)
                tab.screenshot(path=os.path.join(OUT, request.node.name + ".png"), full_page=True)
            browser.close()


@pytest.mark.deadline(90)
def test_requests_appear_live_open_and_replay(server, procs, origin, page):
    port = helpers.free_port()
    proc, url = helpers.start_client("python", procs, server.port, origin, extra=["--inspect", "127.0.0.1:%d" % port])
    name = helpers.tunnel_name(url)
    helpers.wait_sockets(server.port, name, 10)
    page.goto("http://127.0.0.1:%d/" % port)
    page.wait_for_selector("#live.on")      # the event stream is open
    assert page.locator("#list tbody tr").count() == 0

    helpers.visit(server.port, name, "/echo", method="POST", json={"order": 42, "items": ["tea"]})
    row = page.locator("#list tbody tr", has_text="/echo")
    row.wait_for()                          # arrived without a reload
    row.locator("td.status", has_text="200").wait_for()
    row.click()
    body = page.locator("#d-request pre.body.json")
    body.wait_for()
    assert body.inner_text() == '{\n  "order": 42,\n  "items": [\n    "tea"\n  ]\n}'
    assert "waited" in page.locator("#d-meta").inner_text()

    page.keyboard.press("r")                # replay, from the keyboard
    replayed = page.locator("#list tbody tr", has_text="replay of #")
    replayed.wait_for()
    page.locator("#d-meta", has_text="replay of #").wait_for()
    answer = page.locator("#d-response pre.body")    # the origin echoes it without a Content-Type
    answer.wait_for()
    assert '"order": 42' in answer.inner_text()
    assert page.locator("#list tbody tr").count() == 2

    page.click("#edit")                     # edited: another body
    page.fill("#e-body", '{"order": 7}')
    page.click("#e-send")
    page.locator("#d-response pre.body", has_text='"order": 7').wait_for()
    assert page.locator("#list tbody tr").count() == 3

    page.fill("#f-path", "nothing-like-this")     # the filter hides what does not match
    assert page.locator("#list tbody tr:visible").count() == 0
