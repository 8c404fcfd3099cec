"""The web dashboard in a real browser: Debian's Chromium, headless, driven by Selenium.

Jobs are submitted through the REST API and run by the session operator; the browser
sees them appear, end, and gives their log and outputs, and cancels and deletes them.
Screenshots go to ``$CERISE_ARTIFACTS`` if it is set, else to pytest's temporary
directory (``/tmp/pytest-of-$USER/pytest-current/dashboard-screenshots0``); each test
prints where it wrote its own.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from cerise.devenv.controlplane import ControlPlane
from tests.integration import http_calls
from tests.integration.api_fixtures import Api, poll_until
from tests.integration.test_rest_cerise_client import SLEEP, WC, sleeping

pytestmark = [pytest.mark.integration,
              # its module's browser started once, on one worker
              pytest.mark.xdist_group("dashboard")]
T = TypeVar("T")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1280,860")
NOT_INSTALLED = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {}, "outputs": {},
    "steps": {"boom": {"run": "nowhere/missing.cwl", "in": {}, "out": []}}})


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser saves downloads."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium that keeps its console log, so script errors fail the tests."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The browser; after the test, no script error or CSP violation may have been logged
    (failed requests are allowed: a signed-out page sees 401s)."""
    console(browser)
    yield browser
    problems = [entry["message"] for entry in console(browser)
                if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]
    assert not problems


def console(driver: webdriver.Chrome) -> list[dict[str, str]]:
    """The browser console's entries since the last call."""
    entries: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go."""
    artifacts = os.environ.get("CERISE_ARTIFACTS")
    if not artifacts:
        return tmp_path_factory.mktemp("dashboard-screenshots")
    found = Path(artifacts)
    found.mkdir(parents=True, exist_ok=True)
    return found


def screenshot(driver: webdriver.Chrome, directory: Path, name: str,
               capsys: pytest.CaptureFixture[str]) -> None:
    path = directory / f"{name}.png"
    assert driver.save_screenshot(str(path))
    with capsys.disabled():
        print(f"\nscreenshot: {path}")


def wait(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T], what: str,
         timeout: float = 60) -> T:
    """Poll the page until `condition` holds; return what it gave. A missing element counts
    as not yet, and so does one replaced while it was read (fragments that changed are)."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[
        NoSuchElementException, StaleElementReferenceException]).until(condition, what)


def text(driver: webdriver.Chrome, css: str) -> str:
    """The text of the element at `css`."""
    return wait(driver, lambda d: (d.find_element(By.CSS_SELECTOR, css).text,),
                f"reading {css}", timeout=10)[0]


def follow(driver: webdriver.Chrome, link_id: str) -> None:
    """Click the link with id `link_id` once it is there."""

    def clicked(found: webdriver.Chrome) -> bool:
        found.find_element(By.ID, link_id).click()
        return True

    wait(driver, clicked, f"following link {link_id}")


def submit(api: Api, workflow: str | bytes, input_object: dict[str, object],
           name: str) -> str:
    answer = http_calls.post(f"{api.url}/jobs", json={
        "name": name, "workflow": workflow if isinstance(workflow, str) else workflow.decode(),
        "input": input_object}, timeout=30)
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def upload(api: Api, name: str, content: bytes) -> str:
    folder = f"{api.url}/files/input/dashboard-{uuid.uuid4().hex[:8]}"
    assert http_calls.request("MKCOL", f"{folder}/").status_code == 201
    assert http_calls.put(f"{folder}/{name}", content=content).status_code == 201
    return f"{folder}/{name}"


def row_state(driver: webdriver.Chrome, job_id: str) -> str:
    badge = driver.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] [data-state]')
    return str(badge.get_attribute("data-state"))


def job_state(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "article.job").get_attribute("data-state"))


def rest_state(api: Api, job_id: str) -> str:
    state: str = http_calls.get(f"{api.url}/jobs/{job_id}", timeout=10).json()["state"]
    return state


def confirm(driver: webdriver.Chrome) -> None:
    WebDriverWait(driver, 5).until(expected_conditions.alert_is_present())
    driver.switch_to.alert.accept()


def test_submitted_jobs_appear_and_end(
    page: webdriver.Chrome, single_user_api: Api, screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = upload(single_user_api, "words.txt", b"one two three\nfour five\n")
    good = submit(single_user_api, WC, {"file": {"class": "File", "location": words}},
                  "count words")
    bad = submit(single_user_api, NOT_INSTALLED, {}, "a step that is not installed")
    delay = 1000 + uuid.uuid4().int % 9000
    running = submit(single_user_api, SLEEP, {"delay": delay}, "sleeping a while")
    page.get(f"{single_user_api.url}/")
    wait(page, lambda d: row_state(d, good) == "Success", "the job reaching Success")
    row = text(page, f'tr[data-job-id="{good}"]')
    assert "count words" in row
    assert "Success" in row
    assert "1/1" in row  # its one step, done
    assert "local" in row
    wait(page, lambda d: row_state(d, bad) == "PermanentFailure", "the bad job failing")
    assert "Permanent failure" in text(page, f'tr[data-job-id="{bad}"]')
    assert "nowhere/missing.cwl" in text(page, f'tr[data-job-id="{bad}"] .why')
    connection = '[data-resource="local"] [data-connection]'
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, connection).text == "Connected",
         "the resource shown connected")
    assert "this machine" in text(page, '[data-resource="local"]')
    wait(page, lambda d: d.find_element(
        By.CSS_SELECTOR, f'tr[data-job-id="{running}"] .seg.tone-running'), "a step running")
    assert "Running" in text(page, f'tr[data-job-id="{running}"]')
    screenshot(page, screenshots, "jobs", capsys)
    assert http_calls.post(f"{single_user_api.url}/jobs/{running}/cancel").status_code == 200
    poll_until(lambda: not sleeping(delay), 20, "the runner stopping")


def test_a_job_page_shows_steps_log_and_outputs(
    page: webdriver.Chrome, single_user_api: Api, screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = upload(single_user_api, "poem.txt", b"roses are red\nviolets are blue\n")
    job_id = submit(single_user_api, WC, {"file": {"class": "File", "location": words}},
                    "count the poem's words")
    page.get(f"{single_user_api.url}/")
    follow(page, f"job-link-{job_id}")
    wait(page, lambda d: job_state(d) == "Success", "the job page showing Success")
    assert page.title == "count the poem's words · Cerise"
    assert not page.find_element(By.ID, "cancel").is_enabled()
    steps = page.find_element(By.CSS_SELECTOR, ".steps-table").text
    assert "wc" in steps
    assert "Success" in steps
    wait(page, lambda d: "Final process status is success" in d.find_element(By.ID, "log").text,
         "the log's last lines")
    link = page.find_element(By.CSS_SELECTOR, 'a[data-output="output"]')
    assert link.text == "output.txt"
    assert http_calls.get(str(link.get_attribute("href"))).text.split()[:3] == ["2", "6", "31"]
    cost = page.find_element(By.CSS_SELECTOR, "[data-cost]").text
    assert cost.startswith("Cost") and "core-hours (jobscript)" in cost, cost
    raw = page.find_element(By.LINK_TEXT, "Raw log").get_attribute("href")
    last = http_calls.get(str(raw)).text.strip().splitlines()[-1]
    # the page reads the log twice more after the final state, for lines written just after it
    wait(page, lambda d: d.find_element(By.ID, "log").text.strip().endswith(last),
         f"the page's log ending as the raw log does ({last!r})")
    screenshot(page, screenshots, "job", capsys)


def test_a_running_job_is_followed_and_cancelled_from_its_page(
    page: webdriver.Chrome, single_user_api: Api, screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    delay = 1000 + uuid.uuid4().int % 9000
    job_id = submit(single_user_api, SLEEP, {"delay": delay}, "a long sleep")
    page.get(f"{single_user_api.url}/ui/jobs/{job_id}")
    poll_until(lambda: sleeping(delay), what="the runner starting")
    wait(page, lambda d: job_state(d) == "Running" and d.find_element(By.ID, "cancel")
         .is_enabled(), "the page showing the job running")
    wait(page, lambda d: "[step sleep] start" in d.find_element(By.ID, "log").text,
         "the log following the running job")
    assert " s ago" in text(page, ".facts")
    page.find_element(By.ID, "cancel").click()
    confirm(page)
    wait(page, lambda d: job_state(d) == "Cancelled", "the page showing Cancelled")
    assert page.find_element(By.CSS_SELECTOR, "article.job .badge").text == "Cancelled"
    assert not page.find_element(By.ID, "cancel").is_enabled()
    assert rest_state(single_user_api, job_id) == "Cancelled"
    poll_until(lambda: not sleeping(delay), 10, "the runner stopping")
    screenshot(page, screenshots, "job-cancelled", capsys)


def test_the_dashboard_is_not_in_the_openapi_document(single_user_api: Api) -> None:
    paths = http_calls.get(f"{single_user_api.url}/openapi.json").json()["paths"]
    assert "/jobs" in paths
    assert "/" not in paths
    assert "/ns/{namespace}/" not in paths
    assert not [path for path in paths if "/ui/" in path]


def test_unchanged_fragments_are_not_sent_again(single_user_api: Api) -> None:
    url = f"{single_user_api.url}/ui/fragments/jobs"
    first = http_calls.get(url)
    assert first.status_code == 200
    assert "Content-Security-Policy" in first.headers
    tags: list[str] = []

    def unchanged() -> bool:
        """Asked again with the ETag just given, 304; other tests' jobs in the namespace
        may change in between, so a fresh tag is taken each time."""
        tags.append(http_calls.get(url).headers["ETag"])
        return http_calls.get(url, headers={"If-None-Match": tags[-1]}).status_code == 304

    poll_until(unchanged, 30, "an unchanged table answered 304")
    tag = tags[-1]
    job_id = submit(single_user_api, NOT_INSTALLED, {}, "a change")
    changed = http_calls.get(url, headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert job_id in changed.text
    assert changed.headers["ETag"] != tag


def test_a_job_is_deleted_from_its_page(page: webdriver.Chrome, single_user_api: Api) -> None:
    job_id = submit(single_user_api, NOT_INSTALLED, {}, "to be deleted")
    page.get(f"{single_user_api.url}/ui/jobs/{job_id}")
    wait(page, lambda d: job_state(d) == "PermanentFailure", "the job failing")
    assert "nowhere/missing.cwl" in page.find_element(By.CSS_SELECTOR, ".message").text
    page.find_element(By.ID, "delete").click()
    confirm(page)
    wait(page, lambda d: d.current_url == f"{single_user_api.url}/", "the jobs list")
    # the table, or "No jobs yet" where no other test's job is left in the namespace
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job-id], #jobs .empty"),
         "the list")
    assert not page.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')
    assert http_calls.get(f"{single_user_api.url}/jobs/{job_id}").status_code == 404


def test_cluster_mode_shows_jobs_only_to_who_may_read_them(
    page: webdriver.Chrome, cluster_api: Api, control_plane: ControlPlane, screenshots: Path,
    downloads: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    control_plane.kubectl("apply", "-n", "team-a", "-f", "-", stdin=json.dumps({
        "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
        "metadata": {"name": "local"},
        "spec": {"files": {"protocol": "local", "path": "/tmp/cerise-team-a"},
                 "jobs": {"protocol": "local", "scheduler": "none"}}}))
    alice, bob = (control_plane.identities[user].token for user in ("alice", "bob"))
    created = http_calls.post(f"{cluster_api.url}/ns/team-a/jobs", json={
        "name": "alice's secret job", "workflow": NOT_INSTALLED},
        headers={"Authorization": f"Bearer {alice}"}, timeout=30)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert http_calls.get(f"{cluster_api.url}/ns/team-a/ui/fragments/jobs").status_code == 401

    def sign_in(token: str) -> None:
        page.get(f"{cluster_api.url}/ns/team-a/")
        wait(page, lambda d: d.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form")
        assert job_id not in page.page_source
        assert not page.find_element(By.ID, "jobs").is_displayed()
        page.find_element(By.ID, "token").send_keys(token)
        page.find_element(By.CSS_SELECTOR, "#sign-in button").click()

    page.get(f"{cluster_api.url}/ns/team-a/")
    wait(page, lambda d: d.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form")
    screenshot(page, screenshots, "sign-in", capsys)
    sign_in(bob)
    wait(page, lambda d: "may not list" in d.find_element(By.ID, "notice").text,
         "bob being refused")
    assert job_id not in page.page_source
    sign_in(alice)
    wait(page, lambda d: d.find_element(By.ID, f"job-link-{job_id}"), "alice's job listed")
    assert "alice's secret job" in page.find_element(By.ID, "jobs").text
    assert not page.find_element(By.ID, "sign-in").is_displayed()
    # links to the log and outputs are fetched with the token
    follow(page, f"job-link-{job_id}")
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, "article.job"), "alice's job page")
    page.find_element(By.LINK_TEXT, "Raw log").click()
    poll_until(lambda: (downloads / f"{job_id}.log").exists(), 10, "the log downloaded")
    page.find_element(By.ID, "sign-out").click()
    wait(page, lambda d: d.find_element(By.ID, "sign-in").is_displayed(), "signed out")
    assert "secret job" not in page.page_source
    assert not page.find_elements(By.CSS_SELECTOR, "article.job")
