"""Whether the API server answers: GET /version, the cheapest request any client may make;
and which failed requests are the API's unavailability, not an answer."""

from __future__ import annotations

import httpx2 as httpx
from lightkube import ApiError

_TRY_LATER = frozenset({429, 500, 502, 503, 504})


def unavailable(error: BaseException) -> bool:
    """Whether a request's failure says only that the API server did not answer: a
    timeout, a connection refused or cut, or an answer to try again later (429, 5xx)."""
    if isinstance(error, ApiError):
        return error.status.code in _TRY_LATER
    return isinstance(error, httpx.TransportError)


async def server_version(http: httpx.AsyncClient) -> str:
    """The API server's version; raises `httpx.HTTPError` when it does not answer well."""
    response = await http.get("/version")
    response.raise_for_status()
    return str(response.json().get("gitVersion", ""))
