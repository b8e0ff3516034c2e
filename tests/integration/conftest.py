from __future__ import annotations

import pytest

from media.sfu import LocalSFU
from tests.support.rtc import Api


@pytest.fixture
async def sfu():
    async with LocalSFU() as server:
        yield server


@pytest.fixture
async def api(sfu):
    client = Api(sfu.base_url, sfu.app_id, sfu.app_secret)
    yield client
    await client.aclose()
