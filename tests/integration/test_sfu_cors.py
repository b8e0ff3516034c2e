"""The SFU answers browsers' CORS preflights and labels every response for the page's origin."""

from __future__ import annotations

ORIGIN = "http://127.0.0.1:9999"


async def test_preflight_is_answered_without_auth(api) -> None:
    response = await api.http.options(
        api.url("/sessions/new"),
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "authorization,content-type"
    assert "Origin" in response.headers["vary"]


async def test_success_and_error_responses_carry_the_origin(api) -> None:
    created = await api.http.post(
        api.url("/sessions/new"),
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {api.secret}"},
    )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == ORIGIN
    denied = await api.http.post(api.url("/sessions/new"), headers={"Origin": ORIGIN})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == ORIGIN
    assert denied.json()["errorCode"] == "unauthorized"


async def test_no_origin_no_cors_headers(api) -> None:
    response = await api.call("POST", "/sessions/new")
    assert response.status_code == 201
    assert "access-control-allow-origin" not in response.headers
