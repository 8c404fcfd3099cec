"""The service's doors: foreign Host names, cross-origin writes and forwarded headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from cerise.apiserver import origin_guard
from cerise.apiserver.settings import Settings

HOSTS = origin_guard.LOOPBACK_NAMES | {"cerise.example.org", "*.tenants.example.org"}


def refused(method: str = "POST", path: str = "/jobs", scheme: str = "http",
            **headers: str) -> int | None:
    """The status a request is refused with, or None if it is served."""
    found = origin_guard.refusal(
        method=method, path=path, scheme=scheme,
        headers={key.replace("_", "-").lower(): value for key, value in headers.items()},
        hosts=HOSTS, origins=frozenset({"https://app.example.org"}))
    return None if found is None else found.status


@pytest.mark.parametrize("host", ["localhost:29593", "127.0.0.1:29593", "[::1]:29593",
                                  "LOCALHOST", "cerise.example.org", "cerise.example.org.",
                                  "team-a.tenants.example.org:443"])
def test_the_services_own_names_are_served(host: str) -> None:
    assert refused("GET", host=host) is None
    assert refused("POST", host=host) is None  # no Origin: not a browser


@pytest.mark.parametrize("host", ["evil.example.com:29593", "127.0.0.2:29593", "localhost.evil",
                                  "tenants.example.org", "[::2]", "a@localhost", "localhost/x",
                                  "localhost:port", ""])
def test_other_host_names_are_refused_with_400(host: str) -> None:
    assert refused("GET", host=host) == 400
    assert refused("GET", path="/files/input/x", host=host) == 400


def test_healthz_answers_whatever_the_host() -> None:
    assert refused("GET", path="/healthz", host="10.1.2.3:29593") is None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "MKCOL", "PROPFIND", "PATCH"])
def test_a_page_of_another_origin_may_not_change_anything(method: str) -> None:
    own = {"host": "localhost:29593"}
    assert refused(method, **own, origin="http://evil.example.com") == 403
    assert refused(method, **own, origin="null") == 403
    assert refused(method, **own, origin="http://localhost:8888") == 403  # another port
    assert refused(method, **own, origin="https://localhost:29593") == 403  # another scheme
    assert refused(method, **own, sec_fetch_site="cross-site") == 403
    assert refused(method, **own, referer="http://evil.example.com/page") == 403
    assert refused(method, **own, origin="http://localhost:29593") is None
    assert refused(method, **own, origin="http://localhost:29593",
                   sec_fetch_site="same-origin") is None
    assert refused(method, **own, referer="http://localhost:29593/ui/jobs/x") is None
    assert refused(method, **own, origin="https://app.example.org") is None  # allowed


def test_reads_from_other_origins_are_left_to_the_browser() -> None:
    assert refused("GET", host="localhost:29593", origin="http://evil.example.com") is None
    assert refused("HEAD", host="localhost:29593", sec_fetch_site="cross-site") is None


def test_default_ports_are_the_same_origin() -> None:
    assert refused("POST", scheme="https", host="cerise.example.org:443",
                   origin="https://cerise.example.org") is None
    assert refused("POST", scheme="https", host="cerise.example.org",
                   origin="https://cerise.example.org:8443") == 403


def test_the_exchange_url_and_public_hosts_are_own_names(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "CERISE_EXCHANGE_DIR": str(tmp_path), "CERISE_PUBLIC_HOSTS": "a.example.org, *.b.org",
        "CERISE_EXCHANGE_URL": "https://files.example.org/files"})
    assert origin_guard.own_hosts(settings) == origin_guard.LOOPBACK_NAMES | {
        "a.example.org", "*.b.org", "files.example.org"}


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    """A small app behind the guard that shows how it sees the request."""
    app = FastAPI()

    @app.api_route("/jobs", methods=["GET", "POST"])
    @app.post("/ga4gh/wes/v1/runs")
    async def seen(request: Request) -> dict[str, object]:
        return {"url": str(request.base_url), "client": request.client and request.client.host,
                "forwarded": request.headers.get("x-forwarded-host")}

    settings = Settings.from_env({"CERISE_EXCHANGE_DIR": str(tmp_path),
                                  "CERISE_PUBLIC_HOSTS": "cerise.example.org",
                                  "CERISE_TRUSTED_PROXIES": "10.0.0.0/8"})
    return origin_guard.OriginGuard(app, settings)  # type: ignore[return-value]


def test_refusals_are_messages_in_each_apis_form(app: FastAPI) -> None:
    client = TestClient(app, base_url="http://localhost:29593")
    foreign = client.post("/jobs", headers={"Origin": "http://evil.example.com"})
    assert foreign.status_code == 403
    assert "a page of 'http://evil.example.com' may not change anything here" in (
        foreign.json()["detail"])
    wes = client.post("/ga4gh/wes/v1/runs", headers={"Sec-Fetch-Site": "cross-site"})
    assert wes.json() == {"msg": "a page of another site may not change anything here",
                          "status_code": 403}
    rebound = TestClient(app, base_url="http://rebound.example.com:29593").get("/jobs")
    assert rebound.status_code == 400
    assert "does not answer to the host name 'rebound.example.com:29593'" in (
        rebound.json()["detail"])


def test_forwarded_headers_count_only_from_trusted_proxies(app: FastAPI) -> None:
    headers = {"X-Forwarded-Host": "cerise.example.org", "X-Forwarded-Proto": "https",
               "X-Forwarded-For": "192.0.2.7"}
    stranger = TestClient(app, base_url="http://localhost:29593", client=("127.0.0.1", 5000))
    assert stranger.get("/jobs", headers=headers).json() == {
        "url": "http://localhost:29593/", "client": "127.0.0.1", "forwarded": None}
    proxy = TestClient(app, base_url="http://localhost:29593", client=("10.1.2.3", 5000))
    assert proxy.get("/jobs", headers=headers).json() == {
        "url": "https://cerise.example.org/", "client": "192.0.2.7", "forwarded": None}
    evil = proxy.get("/jobs", headers={**headers, "X-Forwarded-Host": "evil.example.com"})
    assert evil.status_code == 400
