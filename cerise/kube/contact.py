"""Whether the API server answers: GET /version, the cheapest request any client may make."""

from __future__ import annotations

import httpx2 as httpx


async def server_version(http: httpx.AsyncClient) -> str:
    """The API server's version; raises `httpx.HTTPError` when it does not answer well."""
    response = await http.get("/version")
    response.raise_for_status()
    return str(response.json().get("gitVersion", ""))
