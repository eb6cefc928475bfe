"""Settings: env prefix, nesting, and secrets that never show."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr, ValidationError

from sluice.stream import Settings, SettingsError, check_environment, client_config, setting_names
from sluice.stream.kafka.clients import librdkafka_config

SECRET = "s3cr3t-do-not-print-9f8e7d"


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("SLUICE_"):
            monkeypatch.delenv(k)
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.topics.events == "events"
    assert s.llm.base_url is None and s.llm.api_key is None


def test_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9093,broker-b:9093")
    monkeypatch.setenv("SLUICE_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("SLUICE_TOPICS__ALERTS", "prod-alerts")
    monkeypatch.setenv("SLUICE_LLM__MODEL", "llama3")
    monkeypatch.setenv("KAFKA__PARTITIONS", "99")  # without the prefix: ignored
    s = Settings()
    assert s.kafka.bootstrap_servers == "broker-a:9093,broker-b:9093"
    assert s.kafka.partitions == 12
    assert s.topics.alerts == "prod-alerts"
    assert s.llm.model == "llama3"


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ValidationError):
        Settings()


def test_secrets_are_secretstr_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLUICE_LLM__API_KEY", SECRET)
    monkeypatch.setenv("SLUICE_KAFKA__SASL_PASSWORD", SECRET)
    monkeypatch.setenv("SLUICE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SLUICE_KAFKA__SASL_USERNAME", "svc")
    s = Settings()
    assert isinstance(s.llm.api_key, SecretStr)
    assert isinstance(s.kafka.sasl_password, SecretStr)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("sluice.test").info("settings: %s / %r", s, s)
    rendered = [repr(s), str(s), s.model_dump_json(), str(s.model_dump()), caplog.text]
    for text in rendered:
        assert SECRET not in text
    assert "**********" in repr(s)
    # The secret is still usable where it is needed: the Kafka client configuration.
    assert client_config(s.kafka)["sasl_plain_password"] == SECRET
    rd = librdkafka_config(s.kafka)  # and the filter stage's librdkafka clients' configuration
    assert (rd["sasl.password"], rd["sasl.username"], rd["security.protocol"]) == (
        SECRET, "svc", "sasl_ssl")  # fmt: skip
    assert s.llm.api_key is not None and s.llm.api_key.get_secret_value() == SECRET


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.stream", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_mistyped_setting_fails_at_start_naming_the_closest_one() -> None:
    """One underscore instead of two: pydantic-settings would ignore it, and the worker would
    quietly fall back to the offline analyst."""
    proc = _cli({"SLUICE_LLM_BASE_URL": "http://127.0.0.1:1/v1"}, "worker")
    assert proc.returncode != 0
    assert "SLUICE_LLM_BASE_URL" in proc.stderr and "SLUICE_LLM__BASE_URL" in proc.stderr
    assert "Traceback" not in proc.stderr
    check_environment({"SLUICE_KAFKA_PORT": "9092", "sluice_llm__model": "x", "OTHER": "1"})
    with pytest.raises(SettingsError, match="SLUICE_PIPELINE__AUDIT_RATE"):
        check_environment({"SLUICE_PIPELINE__AUDIT_RATES": "0.1"})


def test_invalid_values_are_reported_without_echoing_them() -> None:
    proc = _cli(
        {"SLUICE_KAFKA": '{"sasl_password": "' + SECRET + '", "partitions": "x"}'}, "config"
    )
    assert proc.returncode != 0 and "SLUICE_KAFKA__PARTITIONS" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_config_prints_effective_settings_masked_with_their_source() -> None:
    proc = _cli(
        {"SLUICE_LLM__API_KEY": SECRET, "SLUICE_PIPELINE__AUDIT_RATE": "0.25"}, "config", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    rows = {r["setting"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["llm.api_key"] == {
        "setting": "llm.api_key",
        "value": "**********",
        "source": "env SLUICE_LLM__API_KEY",
    }
    assert rows["pipeline.audit_rate"]["value"] == "0.25"
    assert rows["kafka.group_id"]["source"] == "default"
    paths = set(setting_names().values())
    leaves = {p for p in paths if not any(q.startswith(p + ".") for q in paths)}
    assert set(rows) == leaves  # one row per setting; sections (nested ones too) are no row
