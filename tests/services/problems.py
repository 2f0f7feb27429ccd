"""The API's problem documents (application/problem+json), as the API tests check them."""

from __future__ import annotations

import httpx

PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int, slug: str) -> dict:
    """The problem document of ``response``, checked to be ``status`` with type ``slug``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:mofo:problem:{slug}"
    assert body["status"] == status
    assert body["detail"]
    return body
