"""Settings: the seed's names and defaults, clear errors naming the variable, secrets kept out of sight."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from trading.config import ConfigError, Settings, TradingMode, load_settings

SEED_VARIABLES = [
    "GOV_MAX_OPEN_POSITIONS",
    "GOV_MAX_EXEC_PER_HOUR",
    "GOV_MAX_EXEC_PER_5MIN",
    "GOV_MAX_NOTIONAL_PER_TRADE_USDT",
    "GOV_MAX_TOTAL_NOTIONAL_USDT",
    "GOV_SYMBOL_COOLDOWN_SECONDS",
    "GOV_KILL_SCORE_CRITICAL",
    "GOV_KILL_SCORE_OPEN_THRESHOLD",
    "GOV_KILL_SCORE_CLOSE_THRESHOLD",
    "HARVEST_MIN_R",
    "MAX_UNREALIZED_LOSS_PCT_PER_POSITION",
    "MAX_EXPOSURE_PCT",
    "APPLY_ALLOWLIST",
    "APPLY_KILL_SWITCH",
    "REDIS_HOST",
    "REDIS_PORT",
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "TRADING_MODE",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "LIVE_TRADING_ENABLED",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SEED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout


def test_seed_defaults() -> None:
    s = load_settings()
    assert s.gov_max_open_positions == 10
    assert s.gov_max_exec_per_hour == 3
    assert s.gov_max_exec_per_5min == 2
    assert s.gov_max_notional_per_trade_usdt == Decimal("200")
    assert s.gov_max_total_notional_usdt == Decimal("2000")
    assert s.gov_symbol_cooldown_seconds == 60
    assert s.gov_kill_score_critical == 0.8
    assert s.gov_kill_score_open_threshold == 0.85
    assert s.gov_kill_score_close_threshold == 0.65
    assert s.harvest_min_r == Decimal("0.5")
    assert s.max_unrealized_loss_pct_per_position == Decimal("12.5")
    assert s.max_exposure_pct == Decimal("80")
    assert s.apply_allowlist == ["BTCUSDT"]
    assert s.apply_kill_switch is False
    assert s.trading_mode is TradingMode.PAPER
    assert s.rest_url.startswith("http://127.0.0.1:")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOV_MAX_OPEN_POSITIONS", "4")
    monkeypatch.setenv("APPLY_ALLOWLIST", "btcusdt, ETHUSDT")
    monkeypatch.setenv("APPLY_KILL_SWITCH", "TRUE")
    monkeypatch.setenv("TRADING_MODE", "testnet")
    s = load_settings()
    assert s.gov_max_open_positions == 4
    assert s.apply_allowlist == ["BTCUSDT", "ETHUSDT"]
    assert s.apply_kill_switch is True
    assert s.rest_url == "https://demo-fapi.binance.com"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GOV_MAX_EXEC_PER_HOUR=7\n")
    assert load_settings().gov_max_exec_per_hour == 7


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GOV_MAX_OPEN_POSITIONS", "ten"),
        ("GOV_MAX_OPEN_POSITIONS", "0"),
        ("GOV_MAX_NOTIONAL_PER_TRADE_USDT", "-5"),
        ("GOV_KILL_SCORE_CRITICAL", "1.5"),
        ("REDIS_PORT", "70000"),
        ("TRADING_MODE", "yolo"),
        ("APPLY_KILL_SWITCH", "maybe"),
        ("APPLY_ALLOWLIST", "BTC-USDT"),
        ("MAX_EXPOSURE_PCT", "150"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert variable in str(err.value)


def test_live_mode_must_be_asked_for_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_MODE", "live")
    with pytest.raises(ConfigError, match="LIVE_TRADING_ENABLED"):
        load_settings()
    monkeypatch.setenv("LIVE_TRADING_ENABLED", "true")
    assert load_settings().rest_url == "https://fapi.binance.com"


def test_per_trade_limit_cannot_exceed_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOV_MAX_NOTIONAL_PER_TRADE_USDT", "5000")
    with pytest.raises(ConfigError, match="GOV_MAX_NOTIONAL_PER_TRADE_USDT"):
        load_settings()


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t" * 8
    monkeypatch.setenv("BINANCE_API_KEY", "k3y" * 16)
    monkeypatch.setenv("BINANCE_API_SECRET", secret)
    s = load_settings()
    assert secret not in repr(s) and secret not in str(s.model_dump())
    assert s.binance_api_secret is not None and s.binance_api_secret.get_secret_value() == secret
    # Even when another setting is bad, the error text carries no secret.
    monkeypatch.setenv("GOV_MAX_OPEN_POSITIONS", "x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert secret not in str(err.value)


def test_settings_class_is_the_single_source() -> None:
    assert set(Settings.model_fields) >= {name.lower() for name in SEED_VARIABLES}


def test_dashboard_token_is_a_secret_long_enough_to_guard_the_controls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DASHBOARD_TOKEN", "DASHBOARD_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.dashboard_token is None and s.dashboard_port == 8080  # read-only by default
    monkeypatch.setenv("DASHBOARD_TOKEN", "")
    assert load_settings().dashboard_token is None  # `DASHBOARD_TOKEN=` in a .env: still read-only
    monkeypatch.setenv("DASHBOARD_TOKEN", "short-tok")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "DASHBOARD_TOKEN" in str(err.value) and "at least 12 characters" in str(err.value)
    assert "short-tok" not in str(err.value)
    token = "dash-" * 5
    monkeypatch.setenv("DASHBOARD_TOKEN", token)
    s = load_settings()
    assert s.dashboard_token is not None and s.dashboard_token.get_secret_value() == token
    assert token not in repr(s) and token not in str(s.model_dump(mode="json"))
    monkeypatch.setenv("DASHBOARD_PORT", "80800")
    with pytest.raises(ConfigError, match="DASHBOARD_PORT"):
        load_settings()
