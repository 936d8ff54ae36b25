"""Configuration: TOML into frozen Structs, env: secrets, unknown keys refused, secrets masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, config_from_mapping, load_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
ENV = {"GATEWAY_JWT_SECRET": "jwt-secret-value-1234567890-abcdef", "SANDBOX_SECRET": "sbx-value"}


def test_the_example_config_loads_and_documents_the_contract_keys() -> None:
    config = load_config(EXAMPLE, ENV)
    assert config.server.port == 8080
    assert config.server.public_url == "http://127.0.0.1:8080"
    assert config.database.path == "var/gateway.db"
    assert config.auth.jwt_secret == ENV["GATEWAY_JWT_SECRET"]
    assert config.webhooks.timeout_s == 15
    assert config.webhooks.retry_schedule_s == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert config.webhooks.allowed_networks == ("127.0.0.0/8",)
    assert config.carriers.sandbox is not None
    assert config.carriers.sandbox.secret == "sbx-value"


def test_secrets_are_masked_in_repr() -> None:
    config = load_config(EXAMPLE, ENV)
    assert ENV["GATEWAY_JWT_SECRET"] not in repr(config)
    assert ENV["SANDBOX_SECRET"] not in repr(config)


def test_a_missing_env_variable_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"auth\.jwt_secret.*GATEWAY_JWT_SECRET"):
        load_config(EXAMPLE, {"SANDBOX_SECRET": "x"})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="prot"):
        config_from_mapping({"server": {"prot": 1}}, {})


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ConfigError, match="port"):
        config_from_mapping({"server": {"port": "eighty"}}, {})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})


def test_no_file_means_built_in_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {}) == Config()
    assert Config().carriers.sandbox is None


def test_the_contracts_carrier_sections_load() -> None:
    raw = {
        "carriers": {
            "twilio": {"account_sid": "AC1", "auth_token": "env:TW"},
            "telnyx": {"api_key": "k", "public_key": "pk", "base_url": "http://127.0.0.1:1"},
            "vonage": {"api_key": "k", "signature_method": "sha256"},
        }
    }
    config = config_from_mapping(raw, {"TW": "token"})
    assert config.carriers.twilio is not None
    assert config.carriers.twilio.auth_token == "token"
    assert list(config.carriers.sections()) == ["twilio", "telnyx", "vonage"]


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"webhooks": {"allowed_networks": ["ten/8"]}}, "allowed_networks"),
        ({"webhooks": {"concurrency": 0}}, "concurrency"),
        ({"webhooks": {"timeout_s": 0}}, "timeout_s"),
        ({"dispatch": {"retry_delays_s": []}}, "retry_delays_s"),
        ({"dispatch": {"retry_delays_s": [-1]}}, "retry_delays_s"),
        ({"webhooks": {"retry_schedule_s": [5, -1]}}, "retry_schedule_s"),
    ],
)
def test_values_that_cannot_work_are_refused_at_start_up(raw: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        config_from_mapping(raw, {})


@pytest.mark.parametrize("days", [0.5, -1, 1e6, float("inf")])
def test_retention_days_is_zero_or_between_a_day_and_a_century(days: float) -> None:
    with pytest.raises(ConfigError, match="retention_days"):
        config_from_mapping({"database": {"retention_days": days}}, {})


def test_retention_days_zero_keeps_everything() -> None:
    assert config_from_mapping({"database": {"retention_days": 0}}, {}).database.retention_days == 0
