"""The real `clrk` command: output on success, one `error:` line and exit 1 on user errors,
exit 2 on usage errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clrk.cli.options import settings_from
from clrk.dev.settings import DevSettings
from clrk.manifests.compiling import KNATIVE_TIMEOUT_MARGIN_S
from clrk.manifests.documents import load_all

REPO = Path(__file__).resolve().parents[2]
JQ_BOT = REPO / "examples" / "jq-bot" / "manifests"


def clrk(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clrk", *args], input=stdin, capture_output=True, text=True, cwd=REPO)


def test_render_jq_bot() -> None:
    result = clrk("render", "-f", str(JQ_BOT))
    assert result.returncode == 0, result.stderr
    objects = load_all(result.stdout)
    service = objects[0]
    assert service["kind"] == "Service"
    assert service["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    assert service["spec"]["template"]["spec"]["timeoutSeconds"] == 100 + KNATIVE_TIMEOUT_MARGIN_S


def test_value_from_is_an_error_naming_file_and_field(tmp_path: Path) -> None:
    text = (
        (JQ_BOT / "taskagent.yaml")
        .read_text()
        .replace(
            "value: clrk-injected-by-proxy",
            "valueFrom:\n            secretKeyRef: {name: anthropic-credentials, key: api-key}",
        )
    )
    bad = tmp_path / "taskagent.yaml"
    bad.write_text(text)
    result = clrk("validate", "-f", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {bad}: spec.template.spec.env[0].valueFrom: not supported")
    assert "CredentialInjectionPolicy" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stdin_and_warning() -> None:
    doc = (
        "apiVersion: clrk.dev/v1alpha1\nkind: TaskAgent\nmetadata: {name: a}\n"
        "spec:\n  template: {spec: {image: a, command: [cat]}}\n"
    )
    result = clrk("validate", "-f", "-", stdin=doc)
    assert result.returncode == 0
    assert result.stdout.startswith("ok: 1 TaskAgent(s)")
    assert result.stderr.startswith("warning: <stdin>: spec.template.spec.image: 'a' has no tag")


def test_usage_errors_exit_2() -> None:
    assert clrk("render").returncode == 2
    assert clrk("no-such-command").returncode == 2


@pytest.mark.parametrize("command", ["render", "validate", "crds", "version"])
def test_every_command_has_help(command: str) -> None:
    result = clrk(command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_crds_and_version() -> None:
    crds = load_all(clrk("crds").stdout)
    assert {c["spec"]["names"]["kind"] for c in crds} == {
        "TaskAgent",
        "CredentialInjectionPolicy",
        "TaskSchedule",
        "Caller",
    }
    assert clrk("version").stdout.strip() == "0.1.0"


def test_only_the_options_given_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_PORT", "9000")
    monkeypatch.setenv("CLRK_HOST", "10.0.0.1")
    monkeypatch.setenv("CLRK_AUTH", "keys")
    settings = settings_from(DevSettings, host="127.0.0.2", port=None, auth=None)
    assert (settings.host, settings.port, settings.auth) == ("127.0.0.2", 9000, "keys")
    monkeypatch.delenv("CLRK_AUTH")
    assert settings_from(DevSettings, auth=None).auth == "auto", "left out, and no variable: the default"


def test_a_falsy_option_given_still_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLRK_PORT", "9000")
    monkeypatch.setenv("CLRK_SECRETS", '["a=B:c"]')
    settings = settings_from(DevSettings, apply=["m"], port=0, secrets=[])
    assert (settings.port, settings.secrets) == (0, [])


def test_validate_names_file_and_fields_knative_would_refuse(tmp_path: Path) -> None:
    bad = tmp_path / "taskagent.yaml"
    text = (JQ_BOT / "taskagent.yaml").read_text()
    bad.write_text(text.replace("warmPoolSize: 1", "warmPoolSize: 3").replace("maxConcurrency: 8", "maxConcurrency: 2"))
    result = clrk("validate", "-f", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: spec.maxConcurrency: must be at least spec.warmPoolSize (3)")


def test_validate_refuses_warm_start_without_a_warm_pool(tmp_path: Path) -> None:
    bad = tmp_path / "taskagent.yaml"
    bad.write_text((JQ_BOT / "taskagent.yaml").read_text().replace("warmPoolSize: 1", "warmPoolSize: 0"))
    result = clrk("validate", "-f", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {bad}: spec.warmStart: needs spec.warmPoolSize of at least 1, found 0")


def test_render_takes_the_platform_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    result = clrk("render", "-f", str(JQ_BOT), "--cluster-domain", "corp.internal", "--runtime-image", "reg/rt:1")
    assert result.returncode == 0, result.stderr
    pod = load_all(result.stdout)[0]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "reg/rt:1"
    assert {"name": "CLRK_EGRESS_PROXY", "value": "clrk-egress.clrk-system.svc.corp.internal:3128"} in pod[
        "containers"
    ][0]["env"]
    bad = clrk("render", "-f", str(JQ_BOT), "--cluster-domain", "not a domain")
    assert bad.returncode == 1 and bad.stderr.startswith("error: invalid cluster_domain")
    assert "CLRK_CLUSTER_DOMAIN" in bad.stderr and "Traceback" not in bad.stderr
