"""/docs in a real headless Chromium: the page loads from this server alone, lists every route,
and "try it out" of the metadata route with a pasted token answers 200."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from filesvc.auth import mint
from tests.helpers import PREFIX, SECRET
from tests.server_proc import ServerProcess, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60  # seconds: the first paint of a 1.5 MB script on a busy 2-core machine


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(tmp_path / "data", env={"FILESVC_ACCESS_LOG": "off"})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def create_file(url: str, token: str) -> str:
    request = urllib.request.Request(  # noqa: S310 - a loopback test server
        f"{url}{PREFIX}/companies/acme/files?filename=notes.txt",
        data=b"hello from the docs page",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        return str(json.load(resp)["resource"]["id"])


@pytest.mark.slow
def test_docs_page_lists_routes_and_tries_the_metadata_route(
    server: ServerProcess, browser: WebDriver
) -> None:
    token = mint(SECRET, company="acme", user="alice")
    file_id = create_file(server.url, token)
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{server.url}/docs")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))

    spec = json.loads(urllib.request.urlopen(f"{server.url}/openapi.json").read())  # noqa: S310
    listed = {
        el.get_attribute("data-path")
        for el in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert listed == set(spec["paths"])

    # Paste the token, as a person would after `filesvc token`.
    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = wait.until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container input[type=text]"))
    )
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, ".auth-container .modal-btn.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .close-modal").click()

    op = browser.find_element(By.ID, "operations-default-get_companies_company_id_files_file_id")
    op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: op.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    op.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    op.find_element(By.CSS_SELECTOR, 'tr[data-param-name="company_id"] input').send_keys("acme")
    op.find_element(By.CSS_SELECTOR, 'tr[data-param-name="file_id"] input').send_keys(file_id)
    op.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = wait.until(
        lambda _: op.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        )
    )
    assert status[0].text.strip().startswith("200")
    body = op.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    assert json.loads(body)["resource"]["id"] == file_id
    # Nothing on the page came from anywhere but this server.
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert sources and all(s.startswith(server.url) for s in sources), sources
