"""The operator API's door: operator keys (ADMIN_KEYS) only, trading keys 403, every action
audited; the simulator's writes are operators' where keys are set, and can be turned off."""
from __future__ import annotations

import pytest
from tornado.testing import gen_test

from config import ConfigError, load_settings
from tests.integration.test_access import KEY_A, KEY_B, KeyedTestCase, bearer
from tests.integration.test_web import WebTestCase, _OnPostgresAndRedis
from web.access import owner_id
from web.services import key_id_secret

OPERATOR = "operator-key-0123456789-abcdefghijklmn"


class AdminTest(KeyedTestCase):
    env = {**KeyedTestCase.env, "ADMIN_KEYS": OPERATOR}

    def operator_id(self) -> str:
        return "op_" + owner_id(OPERATOR, key_id_secret(self.storage, self.engine_settings))

    @gen_test
    async def test_operator_endpoints_answer_401_without_a_key_and_403_to_a_trading_key(self):
        for headers in (None, {"Authorization": "Bearer wrong"}):
            status, answer = await self.call("/api/admin/audit", headers=headers)
            assert (status, answer["error"]["code"]) == (401, "unauthorized")
        status, answer = await self.call("/api/admin/audit", headers=bearer(KEY_A))
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        status, answer = await self.call("/api/admin/audit", headers=bearer(OPERATOR))
        assert (status, answer) == (200, {"entries": [], "nextBefore": None})

    @gen_test
    async def test_an_operator_key_does_not_trade(self):
        status, answer = await self.call("/api/orders/execute", "POST",
                                         {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"},
                                         headers=bearer(OPERATOR))
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        assert self.order_count() == 0

    @gen_test
    async def test_launching_a_token_needs_an_operator_key_and_is_audited_refused_or_not(self):
        status, answer = await self.call("/api/sim/launch", "POST", {"token": "POPCAT", "inSeconds": 60},
                                         headers=bearer(KEY_B))
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        status, answer = await self.call("/api/sim/launch", "POST", {"token": "POPCAT", "inSeconds": 60},
                                         headers=bearer(OPERATOR))
        assert status == 202 and answer["token"] == "POPCAT"
        status, answer = await self.call("/api/sim/launch", "POST", {"token": "POPCAT", "inSeconds": -1},
                                         headers=bearer(OPERATOR))
        assert (status, answer["error"]["code"]) == (400, "invalid_field")
        entries = []
        while len(entries) < 2:  # the refusal's entry is written after its answer
            status, page = await self.call("/api/admin/audit", headers=bearer(OPERATOR))
            entries = page["entries"]
        refused, done = entries
        assert done["actor"] == refused["actor"] == self.operator_id()
        assert (done["action"], done["target"], done["status"]) == ("sim.launch", "POPCAT", 202)
        assert done["request"] == {"token": "POPCAT", "inSeconds": 60} and done["answer"]["token"] == "POPCAT"
        assert (refused["action"], refused["status"], refused["answer"]["error"]["code"]) == \
            ("sim.launch", 400, "invalid_field")
        status, page = await self.call("/api/admin/audit?limit=1", headers=bearer(OPERATOR))
        assert [e["id"] for e in page["entries"]] == [refused["id"]] and page["nextBefore"] == refused["id"]
        status, page = await self.call(f"/api/admin/audit?before={refused['id']}", headers=bearer(OPERATOR))
        assert [e["id"] for e in page["entries"]] == [done["id"]]
        status, answer = await self.call("/api/admin/audit?limit=0", headers=bearer(OPERATOR))
        assert (status, answer["error"]["field"]) == (400, "limit")


class AdminOnPostgresAndRedisTest(_OnPostgresAndRedis, AdminTest):
    pass


class NoOperatorsTest(WebTestCase):
    """No keys at all: trading is open, the operator API is closed, launching stays open."""

    @gen_test
    async def test_the_operator_api_is_closed_without_admin_keys_and_launching_stays_open(self):
        status, answer = await self.call("/api/admin/audit")
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        assert "ADMIN_KEYS" in answer["error"]["message"]
        status, _ = await self.call("/api/sim/launch", "POST", {"token": "MEW", "inSeconds": 60})
        assert status == 202


class SimControlsOffTest(WebTestCase):
    env = {"SIM_CONTROLS": "off"}

    @gen_test
    async def test_sim_controls_off_answers_launch_404_and_reads_stay(self):
        status, answer = await self.call("/api/sim/launch", "POST", {"token": "MEW", "inSeconds": 60})
        assert (status, answer["error"]["code"]) == (404, "not_found")
        assert "SIM_CONTROLS" in answer["error"]["message"]
        status, _ = await self.call("/api/sim/pools")
        assert status == 200


def test_admin_keys_are_checked_like_api_keys_at_start_up():
    with pytest.raises(ConfigError, match="ADMIN_KEYS"):
        load_settings({"ADMIN_KEYS": "short"}, dotenv=None)
    with pytest.raises(ConfigError, match="ADMIN_KEYS"):
        load_settings({"ADMIN_KEYS": OPERATOR, "API_KEYS": OPERATOR}, dotenv=None)
    with pytest.raises(ConfigError, match="SIM_CONTROLS"):
        load_settings({"SIM_CONTROLS": "maybe"}, dotenv=None)
    settings = load_settings({"ADMIN_KEYS": OPERATOR, "SIM_CONTROLS": "OFF"}, dotenv=None)
    assert settings.admin_keys == (OPERATOR,) and not settings.sim_controls
