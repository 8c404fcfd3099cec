"""The local service is the user's alone: pages of other origins, DNS rebinding and forged
forwarded headers get nothing, while the user's own clients and dashboard keep working.

A real headless Chromium opens an attacker's page, served from another origin by the test
HTTP server, that tries what a drive-by page would: a ``text/plain`` form post and a
no-cors fetch that submit jobs, a WES form post, and cancels of a running job. A second
browser resolves a foreign name to 127.0.0.1, as DNS rebinding does.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration import http_calls, web
from tests.integration.api_fixtures import Api, poll_until
from tests.integration.test_dashboard import CHROMEDRIVER, CHROMIUM, FLAGS
from tests.integration.test_operator_jobs import unique_delay
from tests.integration.test_rest_cerise_client import SLEEP, sleeping
from tests.integration.test_rest_metrics import scrape, value

pytestmark = [pytest.mark.integration,
              # its module's browser started once, on one worker
              pytest.mark.xdist_group("rest-doors")]

REBOUND = "rebound.test"
"""A foreign name the rebinding browser resolves to 127.0.0.1."""
WORKFLOW = json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": {},
                       "outputs": {}, "steps": {}})

ATTACK = """<!doctype html>
<html><head><title>loading</title></head><body>
<form id="jobs" method="POST" action="{api}/jobs" enctype="text/plain" target="sink">
  <input name='{form_name}' value='"}}'>
</form>
<form id="runs" method="POST" action="{api}/ga4gh/wes/v1/runs" enctype="multipart/form-data"
      target="sink">
  <input name="workflow_url" value="{attacker}/{marker}-wes.cwl">
  <input name="workflow_params" value="{{}}">
  <input name="workflow_type" value="CWL">
</form>
<iframe name="sink" id="sink"></iframe>
<script>
const api = "{api}", victim = "{victim}", marker = "{marker}";
function posted(form) {{
  return new Promise(done => {{
    document.getElementById("sink").onload = () => done("loaded");
    document.getElementById(form).submit();
  }});
}}
async function attack() {{
  const tries = [
    () => posted("jobs"),
    () => posted("runs"),
    () => fetch(api + "/jobs", {{method: "POST", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}},
        body: JSON.stringify({{name: marker + "-fetch", workflow: {workflow_js}}})}}),
    () => fetch(api + "/jobs/" + victim + "/cancel", {{method: "POST", mode: "no-cors"}}),
    () => fetch(api + "/ga4gh/wes/v1/runs/" + victim + "/cancel",
                {{method: "POST", mode: "no-cors"}}),
    () => fetch(api + "/jobs/" + victim, {{method: "DELETE"}}),
  ];
  const results = [];
  for (const attempt of tries) {{
    try {{ await attempt(); results.push("sent"); }} catch (e) {{ results.push("blocked"); }}
  }}
  document.title = "done " + results.join(",");
}}
attack();
</script></body></html>
"""


def chromium(*extra: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium that resolves `REBOUND` to 127.0.0.1, as a rebound page would."""
    driver = chromium(f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1")
    yield driver
    driver.quit()


@pytest.fixture
def victim_delay() -> int:
    """How long the victim sleeps: a number of its own, so that its `sleep` process is told
    apart from another test's victim's (on another worker)."""
    return unique_delay()


@pytest.fixture
def victim(single_user_api: Api, victim_delay: int) -> Iterator[str]:
    """A running job (a sleep) that a page must not be able to cancel or delete."""
    answer = http_calls.post(f"{single_user_api.url}/jobs", json={
        "name": "victim", "workflow": SLEEP.decode(), "input": {"delay": victim_delay}},
        timeout=30)
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    poll_until(lambda: sleeping(victim_delay), 60, "the victim job running")
    yield job_id
    http_calls.delete(f"{single_user_api.url}/jobs/{job_id}", timeout=30)


def jobs(api: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = http_calls.get(f"{api.url}/jobs", timeout=30).json()
    return found


def test_a_page_of_another_origin_cannot_submit_cancel_or_delete(
    single_user_api: Api, browser: webdriver.Chrome, victim: str, victim_delay: int,
) -> None:
    marker = f"csrf-{uuid.uuid4().hex[:8]}"
    # The text/plain form body reads `{"name": "<marker>-form", "workflow": …, "x": "="}`.
    form_name = json.dumps({"name": f"{marker}-form", "workflow": WORKFLOW})[:-1] + ', "x": "'
    pages: dict[str, bytes] = {}
    before = scrape(single_user_api)
    with web.serving(lambda path: (200, pages[path]) if path in pages
                     else (404, b"")) as attacker:
        pages["/attack.html"] = ATTACK.format(
            api=single_user_api.url, victim=victim, marker=marker, attacker=attacker,
            form_name=html.escape(form_name, quote=True),
            workflow_js=json.dumps(WORKFLOW)).encode()
        browser.get(f"{attacker}/attack.html")
        title = WebDriverWait(browser, 60, poll_frequency=0.1).until(
            lambda driver: driver.title if driver.title.startswith("done") else None)
    after = scrape(single_user_api)

    assert title == "done sent,sent,sent,sent,sent,blocked"  # DELETE needs CORS: never sent
    assert not [job for job in jobs(single_user_api) if marker in job["name"]]
    assert http_calls.get(f"{single_user_api.url}/jobs/{victim}").json()["state"] == "Running"
    assert sleeping(victim_delay)
    # The requests did arrive, and the service itself refused them.
    refused = value(after, "cerise_api_requests_total", method="POST", route="unmatched",
                    status="403") - value(before, "cerise_api_requests_total", method="POST",
                                          route="unmatched", status="403")
    assert refused == 5


def test_the_users_own_clients_still_change_state(single_user_api: Api, victim: str) -> None:
    """No Origin (cerise-client, wes-client, curl), or the service's own (the dashboard)."""
    own = http_calls.post(f"{single_user_api.url}/jobs/{victim}/cancel",
                          headers={"Origin": single_user_api.url, "Sec-Fetch-Site": "same-origin"},
                          timeout=30)
    assert own.status_code == 200, own.text
    poll_until(lambda: http_calls.get(f"{single_user_api.url}/jobs/{victim}").json()["state"]
               == "Cancelled", 60, "the victim cancelled")


def test_a_job_must_be_sent_as_json(single_user_api: Api) -> None:
    body = json.dumps({"name": "not-json", "workflow": WORKFLOW})
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        answer = http_calls.post(f"{single_user_api.url}/jobs", content=body,
                                 headers={"Content-Type": kind} if kind else {}, timeout=30)
        assert answer.status_code == 415, (kind, answer.text)
        assert "Content-Type: application/json" in answer.json()["detail"]
    assert not [job for job in jobs(single_user_api) if job["name"] == "not-json"]


def test_a_rebound_name_reaches_nothing(single_user_api: Api,
                                        browser: webdriver.Chrome) -> None:
    port = single_user_api.url.rsplit(":", 1)[1]
    for path in ("/jobs", "/", "/files/input/", "/ga4gh/wes/v1/service-info"):
        browser.get(f"http://{REBOUND}:{port}{path}")
        assert f"does not answer to the host name '{REBOUND}:{port}'" in browser.page_source
        assert "victim" not in browser.page_source


@pytest.mark.parametrize("method", ["GET", "PROPFIND", "DELETE", "POST"])
def test_a_foreign_host_header_is_refused(single_user_api: Api, method: str) -> None:
    for path in ("/jobs", "/files/input/", "/ga4gh/wes/v1/runs", "/ui/fragments/jobs"):
        answer = http_calls.request(method, f"{single_user_api.url}{path}",
                                    headers={"Host": "evil.example.com"}, timeout=30)
        assert answer.status_code == 400, (method, path, answer.text)
    assert http_calls.get(f"{single_user_api.url}/healthz", headers={"Host": "10.1.2.3"}).is_success


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_names_are_served(single_user_api: Api, host: str) -> None:
    port = single_user_api.url.rsplit(":", 1)[1]
    answer = http_calls.get(f"{single_user_api.url}/jobs", headers={"Host": f"{host}:{port}"})
    assert answer.status_code == 200


def test_forwarded_headers_from_strangers_are_ignored(single_user_api: Api) -> None:
    answer = http_calls.post(f"{single_user_api.url}/jobs", json={
        "name": "forwarded", "workflow": WORKFLOW}, timeout=30, headers={
        "X-Forwarded-Host": "evil.example.com", "X-Forwarded-Proto": "https"})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["log"] == f"{single_user_api.url}/jobs/{job['id']}/log"
    assert answer.headers["Location"] == f"{single_user_api.url}/jobs/{job['id']}"
    http_calls.delete(f"{single_user_api.url}/jobs/{job['id']}", timeout=30)
