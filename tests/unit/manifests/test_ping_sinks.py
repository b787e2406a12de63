"""A TaskSchedule's PingSource posts to the clrk ingress, never to the agent's Knative Service
(whose shim refuses what the ingress did not sign), with a token only the platform key makes:
``clrk render`` (no key) shows where it goes; ``clrk apply`` and the operator put the token in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clrk.api.schedules import TaskSchedule
from clrk.cli.manifests import dump_yaml
from clrk.manifests import ClusterOptions, compile_bundle, load_bundle
from clrk.manifests.documents import dump_all
from clrk.manifests.schedules import TOKEN_ANNOTATION, TOKEN_PLACEHOLDER, ping_source, with_schedule_token
from clrk_runtime.protocol.keys import schedule_token

KEY = b"platform-key-for-tests"
AGENT = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "TaskAgent",
    "metadata": {"name": "bot", "namespace": "team"},
    "spec": {"template": {"spec": {"image": "example.com/bot:1", "command": ["cat"]}}},
}
SCHEDULE = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "TaskSchedule",
    "metadata": {"name": "nightly", "namespace": "team"},
    "spec": {"agent": "bot", "schedule": "0 3 * * *", "data": {"report": True}},
}


def compiled(tmp_path: Path, options: ClusterOptions | None = None) -> dict[str, Any]:
    path = tmp_path / "manifests.yaml"
    path.write_text(dump_all([AGENT, SCHEDULE]))
    (ping,) = [o for o in compile_bundle(load_bundle([str(path)]), options) if o["kind"] == "PingSource"]
    return ping


def test_rendered_without_the_key_the_sink_is_the_ingress_with_a_placeholder(tmp_path: Path) -> None:
    ping = compiled(tmp_path)
    assert ping["spec"]["sink"] == {
        "uri": f"http://clrk-ingress.clrk.svc.cluster.local/_clrk/schedules/team/bot/{TOKEN_PLACEHOLDER}"
    }
    rendered = dump_yaml([ping])
    assert "TOKEN-FILLED-IN-AT-APPLY" in rendered and "clrk apply and the operator fill it in" in rendered
    assert TOKEN_ANNOTATION in ping["metadata"]["annotations"]


def test_the_sink_follows_the_cluster_domain(tmp_path: Path) -> None:
    uri = compiled(tmp_path, ClusterOptions(cluster_domain="corp.example"))["spec"]["sink"]["uri"]
    assert uri.startswith("http://clrk-ingress.clrk.svc.corp.example/_clrk/schedules/team/bot/")


def test_at_apply_the_token_is_the_agents_own(tmp_path: Path) -> None:
    ping = compiled(tmp_path)
    filled = with_schedule_token(ping, KEY, ClusterOptions())
    token = schedule_token(KEY, "team", "bot")
    assert filled["spec"]["sink"] == {
        "uri": f"http://clrk-ingress.clrk.svc.cluster.local/_clrk/schedules/team/bot/{token}"
    }
    assert ping["spec"]["sink"]["uri"].endswith(TOKEN_PLACEHOLDER), "the compiled object is left as it was"
    assert filled == ping_source(TaskSchedule.model_validate(SCHEDULE), ClusterOptions(), KEY)
    assert {k: v for k, v in filled.items() if k != "spec"} == {k: v for k, v in ping.items() if k != "spec"}


def test_only_compiled_ping_sources_are_touched() -> None:
    service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "bot"}}
    foreign = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {"name": "theirs", "namespace": "team"},
        "spec": {"sink": {"uri": "http://example.com/"}},
    }
    assert with_schedule_token(service, KEY, ClusterOptions()) is service
    assert with_schedule_token(foreign, KEY, ClusterOptions()) is foreign
