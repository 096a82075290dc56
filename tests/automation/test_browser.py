"""A real browser against `dagster dev`: the demo assets are there, "Materialize all" runs them,
and a written asset's page shows rows_written. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, dagster_bin
from tests.e2e.test_dagster_dev import free_port, graphql

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
ARTIFACTS = REPO / "test-artifacts" / "browser"
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
DEMO_ASSETS = [
    f"{kind}_{table}{suffix}"
    for table in ("actors", "directors", "movies", "movie_actors", "reviews")
    for kind, suffix in (("extract", ""), ("write", "_csv"))
]
RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]'")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(binary):
            pytest.fail(f"{binary} is missing: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def dismiss_welcome_dialog(driver) -> None:  # type: ignore[no-untyped-def]
    """A fresh DAGSTER_HOME greets with a "Join the Dagster community" dialog over the page."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 20  # it appears a few seconds after the first page
    while time.monotonic() < deadline:
        buttons = driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']")
        if buttons:
            buttons[0].click()
            time.sleep(0.5)
            return
        time.sleep(0.5)


def wait_text(driver, pattern: str, timeout: float = 60) -> re.Match[str]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element(By.TAG_NAME, "body").text
        match = re.search(pattern, text)
        if match:
            return match
        time.sleep(0.5)
    shot(driver, "failed-waiting")
    raise AssertionError(f"{pattern!r} never appeared; page text:\n{text[-2000:]}")


@pytest.mark.e2e
def test_browser_materializes_all_demo_assets_and_reads_rows_written(
    project: Path, clean_env: dict[str, str], browser
) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    (Path(clean_env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = project / "dagster-dev.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [dagster_bin(), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=project,
            env=clean_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(1)

        (location,) = [e["name"] for e in graphql(port, LOCATIONS)["data"]["workspaceOrError"]["locationEntries"]]
        group_page = f"{base}/locations/{location}/asset-groups/movies_to_csv"
        browser.get(group_page)
        wait_text(browser, r"write_reviews_csv")
        dismiss_welcome_dialog(browser)
        shot(browser, "1-asset-graph")
        button = browser.find_element(By.XPATH, "//button[contains(., 'Materialize all')]")
        button.click()
        time.sleep(2)
        shot(browser, "2-materialize-all-clicked")

        deadline = time.monotonic() + 150
        status = None
        while time.monotonic() < deadline:
            runs = graphql(port, RUNS)["data"]["runsOrError"]["results"]
            status = runs[0]["status"] if runs else None
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        assert status == "SUCCESS", (status, log.read_text()[-3000:])
        (run,) = runs
        browser.get(f"{base}/runs/{run['runId']}")
        wait_text(browser, r"(?i)success")
        shot(browser, "3-run-succeeded")

        # The graph renders only the nodes in view; the List tab names every asset of the group.
        browser.get(f"{group_page}/list")
        for step in DEMO_ASSETS:
            wait_text(browser, rf"\b{step}\b")
        wait_text(browser, r"Written by filesystem.csv_writer: output/actors.csv")  # descriptions
        shot(browser, "4-asset-list")

        browser.get(f"{base}/assets/movies_to_csv/write_actors_csv?view=events")
        match = wait_text(browser, r"rows_written\s+(\d+)")
        shot(browser, "5-written-asset")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    with (project / "output" / "actors.csv").open(newline="") as file:
        rows_in_file = len(list(csv.reader(file))) - 1
    assert int(match.group(1)) == rows_in_file > 0
