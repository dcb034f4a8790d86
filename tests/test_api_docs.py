"""/api/docs in a real browser: the vendored Swagger UI lists the operations of the served
OpenAPI document and runs "Try it out" against this gateway (a GET and a POST), offline and
within the page's Content-Security-Policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import Herd
from playwright.sync_api import ConsoleMessage, Locator, Page, expect, sync_playwright
from test_browser import CHROMIUM, CHROMIUM_ARGS, gateway

pytestmark = pytest.mark.timeout(90)


def operation(page: Page, operation_id: str) -> Locator:
    """An operation's block; Swagger UI's ids are ``operations-<tag>-<operationId>``."""
    return page.locator(f"[id^='operations-'][id$='-{operation_id}']")


def try_it_out(block: Locator, body: object = None) -> Locator:
    """Expand an operation, press "Try it out" (with ``body`` as its request body, if given)
    and "Execute"; the status of the answer it shows."""
    block.locator(".opblock-summary").first.click()
    block.get_by_role("button", name="Try it out").click()
    if body is not None:
        block.locator("textarea.body-param__text").fill(json.dumps(body))
    block.get_by_role("button", name="Execute").click()
    return block.locator(".live-responses-table .response .response-col_status").first


def watch(page: Page) -> tuple[list[str], list[str]]:
    """The URLs ``page`` requests, and the errors and warnings it reports (a script refused
    by the Content-Security-Policy is one), as they come."""
    requests: list[str] = []
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda request: requests.append(request.url))
    return requests, problems


def test_swagger_ui_lists_the_api_and_tries_it_out(tmp_path: Path) -> None:
    with Herd(tmp_path) as herd:
        herd.wait_links()
        with gateway(herd) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                requests, problems = watch(page)
                page.goto(base + "/api/docs")

                # Every operation of the document is listed.
                spec = json.loads(page.request.get(base + "/api/v1/openapi.json").text())
                ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
                assert len(ids) == 11, ids
                for operation_id in ids:
                    expect(operation(page, operation_id)).to_be_visible(timeout=10_000)
                expect(page.locator(".opblock-summary-path").first).to_be_visible()

                # A GET through "Try it out": the herd overview, 200.
                expect(try_it_out(operation(page, "herdStatus"))).to_have_text(
                    "200", timeout=10_000
                )

                # A POST: a report, stored (the Host and cross-site checks let the page's own
                # request through: same origin).
                report = operation(page, "reportLocations")
                body = {"client_id": "swagger", "lat": 34.07, "lon": -118.44}
                expect(try_it_out(report, body)).to_have_text("200", timeout=10_000)
                expect(report.locator(".live-responses-table")).to_contain_text('"swagger"')
                page.screenshot(path=str(tmp_path / "api-docs.png"), full_page=False)
            finally:
                browser.close()

    # Offline: everything came from the gateway itself.
    foreign = [url for url in requests if not url.startswith(base)]
    assert not foreign, foreign
    assert not problems, problems
