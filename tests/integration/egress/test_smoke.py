from __future__ import annotations

from tests.support.egress import Egress

MESSAGES = "https://api.anthropic.com/v1/messages?beta=true"
BODY = {"model": "claude-test", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


async def test_json_call_gets_the_real_key(egress: Egress) -> None:
    async with egress.client() as client:
        r = await client.post(MESSAGES, json=BODY, headers={"x-api-key": "placeholder"})
    assert r.status_code == 200, r.text
    seen = egress.fake.messages_requests()[-1]
    assert seen.headers["x-api-key"] == egress.real_key
