"""Headless Chromium for the report and explorer tests (Debian's ``chromium``, driven by
Playwright): a module-scoped ``browser`` fixture and a page that records every request it makes
and lets only ``file:``/``data:`` through, so a test can never reach the network."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield instance
        instance.close()


def open_recorded(browser, url: str, viewport: tuple[int, int] = (1280, 900)):
    """(context, page, requests, errors) for ``url``: every request URL is recorded and anything
    that is not file: or data: is aborted (and recorded); ``errors`` collects uncaught page
    exceptions and console errors."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    requests: list[str] = []
    errors: list[str] = []
    context.on("request", lambda request: requests.append(request.url))

    def guard(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    page.wait_for_load_state("load")
    return context, page, requests, errors
