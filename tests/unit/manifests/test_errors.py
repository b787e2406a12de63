"""Every manifest mistake is an error naming the file, the field and what was expected; image
references re-apply cannot track are warnings."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from clrk.errors import SpecError
from clrk.manifests import load_bundle
from clrk.manifests.documents import dump_all

AGENT: dict[str, Any] = {
    "apiVersion": "clrk.dev/v1alpha1",
    "kind": "TaskAgent",
    "metadata": {"name": "bot"},
    "spec": {"template": {"spec": {"image": "registry.example.com/bot:1", "command": ["cat"]}}},
}


def _agent(**spec: Any) -> dict[str, Any]:
    return {**AGENT, "spec": {**AGENT["spec"], **spec}}


def _write(tmp_path: Path, *docs: Any, name: str = "agents.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dump_all(docs))
    return path


def _error(tmp_path: Path, *docs: Any) -> SpecError:
    path = _write(tmp_path, *docs)
    with pytest.raises(SpecError) as info:
        load_bundle([str(path)])
    assert str(path) in str(info.value), "the error must name the file"
    return info.value


def test_value_from_names_the_field_and_the_remedy(tmp_path: Path) -> None:
    container = {
        "image": "registry.example.com/bot:1",
        "command": ["cat"],
        "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    error = _error(tmp_path, _agent(template={"spec": container}))
    assert error.field == "spec.template.spec.env[0].valueFrom"
    assert "CredentialInjectionPolicy" in error.message


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"timout": "10s"}, "spec.timout", "unknown field"),
        ({"timeout": "ten seconds"}, "spec.timeout", "'ten seconds'"),
        ({"timeout": "3601s"}, "spec.timeout", "at most 3600s"),
        ({"timeout": "0s"}, "spec.timeout", "positive"),
        ({"warmPoolSize": -1}, "spec.warmPoolSize", "found -1"),
        ({"maxConcurrency": 0}, "spec.maxConcurrency", "found 0"),
        ({"warmStart": True}, "spec.warmStart", "needs spec.warmPoolSize of at least 1, found 0"),
        ({"warmStart": True, "warmPoolSize": 0}, "spec.warmStart", "spec.warmPoolSize 0 keeps none"),
        ({"warmStart": "sometimes"}, "spec.warmStart", "boolean"),
        ({"budget": {"tokens": 10, "window": "a while"}}, "spec.budget.window", "duration"),
    ],
)
def test_bad_fields(tmp_path: Path, spec: dict[str, Any], field: str, words: str) -> None:
    error = _error(tmp_path, _agent(**spec))
    assert error.field == field
    assert words in error.message


def test_unknown_field_deep_inside(tmp_path: Path) -> None:
    doc = _agent(template={"spec": {"image": "x:1", "command": ["cat"], "imagePullPolicy": "Always"}})
    assert _error(tmp_path, doc).field == "spec.template.spec.imagePullPolicy"


def test_duplicate_objects(tmp_path: Path) -> None:
    error = _error(tmp_path, AGENT, AGENT)
    assert "document 2" in error.source
    assert "TaskAgent/default/bot is already defined" in error.message


def test_schedule_for_unknown_agent(tmp_path: Path) -> None:
    schedule = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": "nightly"},
        "spec": {"agent": "ghost", "schedule": "0 3 * * *"},
    }
    error = _error(tmp_path, AGENT, schedule)
    assert error.field == "spec.agent"
    assert "default/ghost" in error.message and "default/bot" in error.message


def test_bad_cron_and_time_zone(tmp_path: Path) -> None:
    schedule = {
        "apiVersion": "clrk.dev/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": "nightly"},
        "spec": {"agent": "bot", "schedule": "every night"},
    }
    assert _error(tmp_path, AGENT, schedule).field == "spec.schedule"
    schedule["spec"] = {"agent": "bot", "schedule": "0 3 * * *", "timeZone": "Mars/Olympus"}
    assert _error(tmp_path, AGENT, schedule).field == "spec.timeZone"


def test_unknown_kind_in_our_group(tmp_path: Path) -> None:
    error = _error(tmp_path, {**AGENT, "kind": "TaskAgnet"})
    assert error.field == "kind"
    assert "TaskAgent" in error.message


def test_invalid_name(tmp_path: Path) -> None:
    error = _error(tmp_path, {**AGENT, "metadata": {"name": "Jq_Bot"}})
    assert error.field == "metadata.name"


def test_missing_entrypoint(tmp_path: Path) -> None:
    doc = _agent(template={"spec": {"image": "x:1"}})
    error = _error(tmp_path, doc)
    assert error.field == "spec.template.spec.command"
    assert "clrk.dev/build-context" in error.message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: invalid YAML: line \d+"):
        load_bundle([str(path)])


def test_document_without_kind(tmp_path: Path) -> None:
    error = _error(tmp_path, {"apiVersion": "v1", "metadata": {"name": "x"}})
    assert error.field == "kind"


@pytest.mark.parametrize(
    ("image", "warned"),
    [
        ("registry.example.com/bot", True),
        ("registry.example.com/bot:latest", True),
        ("localhost:5000/bot", True),
        ("localhost:5000/bot:1.2", False),
        ("registry.example.com/bot@sha256:" + "a" * 64, False),
    ],
)
def test_untracked_image_references_warn(tmp_path: Path, image: str, warned: bool) -> None:
    path = _write(tmp_path, _agent(template={"spec": {"image": image, "command": ["cat"]}}))
    warnings = load_bundle([str(path)]).manifests.warnings
    assert bool(warnings) == warned
    if warned:
        assert "clrk build" in warnings[0] and str(path) in warnings[0]


def test_folder_recursive_multi_document_and_stdin(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    _write(nested, AGENT, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    other = {**AGENT, "metadata": {"name": "other"}}
    (tmp_path / "ignored.txt").write_text("not yaml: [")
    stdin = io.StringIO(dump_all([other]))
    bundle = load_bundle([str(tmp_path), "-"], stdin=stdin)
    assert [a.metadata.name for a in bundle.manifests.agents] == ["bot", "other"]
    assert bundle.manifests.passthrough == [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file or folder"):
        load_bundle([str(tmp_path / "nope")])
    with pytest.raises(SpecError, match=r"no \*\.yaml"):
        load_bundle([str(tmp_path)])


@pytest.mark.parametrize("name", ["9lives", "a" * 59])
def test_agent_names_that_cannot_name_a_service(tmp_path: Path, name: str) -> None:
    error = _error(tmp_path, {**AGENT, "metadata": {"name": name}})
    assert error.field == "metadata"
    assert "start with a letter" in error.message
