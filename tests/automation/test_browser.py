"""A real browser against `osiris-dagster ui`, the way a new user goes: the Catalog, its lineage
view, **Materialize all** (every asset of both demo pipelines, one run of Dagster's implicit
`__ASSET_JOB`), then the run, an extracted asset and a written asset's check.

What is checked comes from outside the product's own reports where it can: the executor from the
run's log as the UI shows it ("Executing steps in process (pid: N)") and from Dagster's event log
(every step started in that one process); row counts from the SQLite source itself, the CSV file
and PostgreSQL's own count (the Supabase pipeline writes through the direct COPY transport into a
fresh database).

Screenshots go to `test-artifacts/screenshots/` (gitignored; README, Development): the lineage,
the extracted asset's page, the written asset's check, the run, and `failed-waiting.png` when a
wait times out.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from osiris_dagster.connections import demo_database_path
from osiris_dagster.project import ProjectLayout
from osiris_dagster.session.catalogue import validator
from osiris_dagster.session.reader import SessionRecord
from tests.automation.test_one_executor import step_processes
from tests.conftest import REPO
from tests.e2e.test_dagster_dev import graphql, start_ui

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
RUNS = "{ runsOrError { ... on Runs { results { runId status jobName } } } }"
TABLES = ("actors", "directors", "movies", "movie_actors", "reviews")
DEMO_ASSETS = [f"{kind}_{table}{suffix}" for table in TABLES for kind, suffix in (("extract", ""), ("write", "_csv"))]


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
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
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
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
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


def wait_gone(driver, text: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while text in driver.find_element(By.TAG_NAME, "body").text:
        if time.monotonic() > deadline:
            shot(driver, "failed-waiting")
            raise AssertionError(f"{text!r} still on the page after {timeout} s")
        time.sleep(0.5)


def click_button(driver, label: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[contains(., '{label}')]").click()


def source_rows(project: Path, table: str) -> int:
    with sqlite3.connect(demo_database_path(ProjectLayout(project), "movies")) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def csv_rows(path: Path) -> int:
    with path.open(newline="") as file:
        return len(list(csv.reader(file))) - 1


@pytest.mark.e2e
@pytest.mark.postgres
def test_materialize_all_in_the_catalog_runs_in_process_and_leaves_a_complete_session(
    project: Path, clean_env: dict[str, str], postgres_database: str, browser
) -> None:  # type: ignore[no-untyped-def]
    import psycopg
    from selenium.webdriver.common.by import By

    home = Path(clean_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **clean_env,
        "SUPABASE_URL": "http://127.0.0.1:9",  # unused: pg_dsn selects the direct COPY transport
        "SUPABASE_SERVICE_ROLE_KEY": "browser-test-service-role-key",
        "SUPABASE_PG_DSN": f"postgresql://postgres@127.0.0.1:5432/{postgres_database}",
    }
    ui, port, log = start_ui(project, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                if graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            assert ui.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        (location,) = [e["name"] for e in graphql(port, LOCATIONS)["data"]["workspaceOrError"]["locationEntries"]]

        # The Catalog, then its "View lineage": every asset of the code location, and Materialize all.
        browser.get(f"{base}/assets")
        wait_text(browser, r"movies_to_supabase / extract_actors")  # the table renders the rows in view
        dismiss_welcome_dialog(browser)
        browser.find_element(By.XPATH, "//a[contains(., 'View lineage')]").click()
        wait_text(browser, r"Global asset lineage")
        click_button(browser, "Materialize all")

        deadline = time.monotonic() + 240
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = graphql(port, RUNS)["data"]["runsOrError"]["results"]
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        (run,) = runs
        assert run["status"] == "SUCCESS", (run, log.read_text()[-3000:])
        assert run["jobName"] == "__ASSET_JOB"
        run_id = run["runId"]

        # The executor, as the run's page shows it, then as Dagster's event log records each step.
        browser.get(f"{base}/runs/{run_id}")
        wait_text(browser, r"RUN_SUCCESS")
        browser.find_element(By.XPATH, "//input[contains(@placeholder, 'Filter')]").send_keys("steps in process")
        announced = wait_text(browser, r"Executing steps in process \(pid: (\d+)\)")
        wait_text(browser, rf"Finished steps in process \(pid: {announced.group(1)}\)")
        shot(browser, "run")
        engine, starts = step_processes(home, run_id)
        assert len(starts) == 20 and set(starts.values()) == {int(announced.group(1))}, starts
        assert not [message for message in engine if "subprocess" in message.lower()]

        # Lineage of one pipeline, now materialized: the graph renders only what is in view.
        browser.set_window_size(1600, 1500)  # tall enough for the pipeline's five rows of nodes
        browser.get(f"{base}/locations/{location}/asset-groups/movies_to_csv")
        wait_text(browser, r"write_reviews_csv")
        wait_gone(browser, "Loading")  # each node's status arrives after the graph
        shot(browser, "lineage")
        browser.set_window_size(1600, 1000)
        browser.get(f"{base}/locations/{location}/asset-groups/movies_to_csv/list")
        for asset in DEMO_ASSETS:
            wait_text(browser, rf"\b{asset}\b")

        browser.get(f"{base}/assets/movies_to_csv/extract_actors")
        wait_text(browser, r"(?s)Extracted table.*actors")
        wait_text(browser, r"dagster/row_count|Row count")
        shot(browser, "extracted-asset")

        browser.get(f"{base}/assets/movies_to_csv/write_actors_csv?view=checks")
        wait_text(browser, r"row_count_matches_extract")
        wait_text(browser, r"(?i)passed|succeeded")
        shot(browser, "written-asset-check")

        browser.get(f"{base}/assets/movies_to_csv/write_actors_csv?view=events")
        written = wait_text(browser, r"rows_written\s+(\d+)")
        shot(browser, "written-asset-events")
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)

    record = SessionRecord.read(ProjectLayout(project).session_dir(run_id))
    names = [line["event"] for line in record.events]
    assert names[0] == "run_start" and names[-1] == "run_end", names
    status = record.status or {}
    validator("status").validate(status)
    assert status["ok"] is True and status["job"] == "__ASSET_JOB"
    assert status["pipelines"] == ["movies-to-csv", "movies-to-supabase"]
    assert status["steps_total"] == status["steps_completed"] == 20
    (start,) = [line for line in record.events if line["event"] == "run_start"]
    assert start["executor"] == "in_process"

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={postgres_database}") as db:
        for table in TABLES:
            expected = source_rows(project, table)
            assert csv_rows(project / "output" / f"{table}.csv") == expected, table
            assert db.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0] == expected, table
    assert int(written.group(1)) == source_rows(project, "actors") > 0
