"""The one settings object, read from the environment and an optional `.env`.

Variable names and defaults follow the seed system where it had them, so an operator's existing
environment files keep working. A bad value fails at start with the variable's name.
"""

from __future__ import annotations

import socket
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trading.paths import SHIPPED_DATA_DIR
from trading.risk import RiskLayerPolicy


class TradingMode(StrEnum):
    PAPER = "paper"
    TESTNET = "testnet"
    LIVE = "live"


# Bar sizes the venue streams as klines and the signal layer understands (seconds per bar).
SIGNAL_TIMEFRAMES = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "1d": 86400,
}


class ConfigError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    # Each field's docstring is its description: `qtrader config --table` prints them, and the settings
    # table in README.md is generated from them (tests/workers/test_settings_table.py keeps it in step).
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    # --- governor (seed names) ---
    gov_max_open_positions: int = Field(10, ge=1, le=10_000)
    """Most positions open at once (portfolio slots)."""
    gov_max_exec_per_hour: int = Field(3, ge=0)
    """Most entries in any rolling hour."""
    gov_max_exec_per_5min: int = Field(2, ge=0)
    """Most entries in any rolling 5 minutes."""
    gov_max_notional_per_trade_usdt: Decimal = Field(Decimal("200"), gt=0)
    """Largest notional one entry is granted (USDT)."""
    gov_max_total_notional_usdt: Decimal = Field(Decimal("2000"), gt=0)
    """Largest notional of all open positions together (USDT)."""
    gov_symbol_cooldown_seconds: int = Field(60, ge=0)
    """Seconds after an entry before the same symbol may enter again."""
    gov_kill_score_critical: float = Field(0.8, ge=0, le=1)
    """Seed setting, read and checked but not used by this system."""
    gov_kill_score_open_threshold: float = Field(0.85, ge=0, le=1)
    """An intent whose kill score reaches this is denied entry."""
    gov_kill_score_close_threshold: float = Field(0.65, ge=0, le=1)
    """Seed setting, read and checked but not used by this system."""

    # --- exits and risk (seed names) ---
    harvest_min_r: Decimal = Field(Decimal("0.5"), gt=0)
    """Profit in R (multiples of the initial risk) at which a quarter of the position is harvested."""
    max_unrealized_loss_pct_per_position: Decimal = Field(Decimal("12.5"), gt=0, le=100)
    """Emergency close of a position whose unrealized loss reaches this % of its margin."""
    max_exposure_pct: Decimal = Field(Decimal("80"), gt=0, le=100)
    """Seed setting, read and checked but not used by this system."""

    # --- apply layer (seed names) ---
    apply_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["BTCUSDT"])
    """Symbols a new portfolio allows entries on (`*`: every symbol); a trade outside it is refused. A
    running portfolio keeps its own: change that with `qtrader portfolio policy --set allowlist=...`."""
    apply_kill_switch: bool = False
    """A new portfolio starts with the kill switch on (no new entries; exits still work)."""

    # --- infrastructure ---
    redis_host: str = "127.0.0.1"
    """Redis host (streams, projections, the shared weight budget); `stack up` binds its Redis here."""
    redis_port: int = Field(6379, ge=1, le=65535)
    """Redis port."""
    temporal_address: str = "127.0.0.1:7233"
    """Temporal frontend (gRPC) as HOST:PORT; `stack up` starts its dev server there."""
    temporal_namespace: str = "default"
    """Temporal namespace of every workflow."""
    temporal_ui_port: int = Field(8233, ge=1, le=65535)
    """Port of the Temporal Web UI (`stack up`'s dev server; links printed by the CLI)."""
    prometheus_bind_host: str = "127.0.0.1"
    """Address the metrics endpoints listen on: loopback unless told otherwise (a container publishes
    its endpoint with 0.0.0.0)."""
    lifecycle_metrics_port: int = Field(9464, ge=1, le=65535)
    """Metrics port of the lifecycle worker."""
    exchange_metrics_port: int = Field(9465, ge=1, le=65535)
    """Metrics port of the exchange worker."""
    watcher_metrics_port: int = Field(9466, ge=1, le=65535)
    """Metrics port of the price watcher."""
    user_stream_metrics_port: int = Field(9467, ge=1, le=65535)
    """Metrics port of the user-data stream."""
    lifecycle_cached_workflows: int = Field(10_000, ge=10, le=1_000_000)
    """Workflows the lifecycle worker keeps in memory (its sticky cache; an open position's takes about
    190 KiB, bench.scale): at least the open positions it holds, or each of their signals replays a
    history."""
    lifecycle_gc_freeze_seconds: float = Field(10.0, ge=0, le=3600)
    """Every this many seconds the lifecycle worker collects its new garbage and freezes what survived, so
    that Python's full collections skip the cached workflows (workers/gc_pauses.py; at 5,000 open
    positions each full pass stopped the lifecycle worker for about a second). 0: Python's own
    collector alone."""
    feed_lease_seconds: float = Field(5.0, ge=0.5, le=60)
    """The price watcher's and the user-data stream's lease in Redis: of the copies of each that run, one
    is active and the others take over within this many seconds of its last renewal (renewed every
    fifth of it)."""
    reconcile_interval_seconds: float = Field(30.0, gt=0)
    """Period of the reconcile Schedule (venue positions and orders against the workflows)."""
    risk_inputs_interval_minutes: float = Field(60.0, gt=0)
    """Period of the market-inputs Schedule: correlation clusters and allocation caps for the risk layer,
    from the stored bars of SIGNAL_TIMEFRAME (nothing is computed while the risk layer is off)."""
    risk_inputs_window_bars: int = Field(720, ge=3, le=1500)
    """Bars the correlation and volatility of the market inputs look back over."""
    balance_check_seconds: float = Field(60.0, gt=0)
    """How often the user-data stream's balance tracker reads the account besides each ACCOUNT_UPDATE
    (GET /fapi/v3/account, weight 5)."""
    policy_review_interval_hours: float = Field(24.0, gt=0, le=720)
    """Period of the policy-review Schedule: a proposal to tighten or restore the risk policy from the
    last day's trades and emergency-stop moves, applied only when an operator approves it."""
    reconcile_on_start: bool = True
    """The lifecycle worker runs a reconcile at start; until it is done new entries wait."""
    portfolio_holder_check_seconds: float = Field(30.0, gt=0)
    """How often the portfolio looks for holders that stopped without giving their slot back."""
    risk_layer_policy: RiskLayerPolicy | None = None
    """The risk layer a new portfolio starts with, as JSON (fields of trading.risk.RiskLayerPolicy: the
    automatic emergency stop, protections, heat, concentration, allocation; `{}` is every default); unset,
    the governor's gates alone. A running portfolio changes it only through its `set_risk_policy` update."""
    qt_home: Path = Path(".qt")
    """Folder of the local stack's state, logs, models and journal."""
    database_url: SecretStr | None = None
    """The trade journal: a SQLite file under QT_HOME unless this names a PostgreSQL database
    (postgresql://user:password@host:5432/db) or another SQLite file (sqlite:///path)."""
    start_equity_usdt: Decimal | None = Field(None, gt=0)
    """Equity when the journal began (the performance gauges and reports add the journal's PnL to it);
    default PAPER_START_BALANCE_USDT."""
    performance_metrics_port: int = Field(9470, ge=1, le=65535)
    """The lifecycle worker's second metrics endpoint: equity, PnL, drawdown, Sharpe from the journal."""
    dashboard_port: int = Field(8080, ge=1, le=65535)
    """Port of the web dashboard (`qtrader dashboard`, started by `stack up`)."""
    dashboard_token: SecretStr | None = None
    """Enables the dashboard's kill switch and flatten-all for whoever presents it; read-only when
    unset."""

    # --- exchange ---
    trading_mode: TradingMode = TradingMode.PAPER
    """Which venue: the local paper exchange, Binance's testnet, or live Binance."""
    live_trading_enabled: bool = False
    """Live money needs this second, explicit yes besides TRADING_MODE=live (and the CLI asks a third
    time)."""
    binance_api_key: SecretStr | None = None
    """API key (in paper mode `stack up` generates one under QT_HOME when unset)."""
    binance_api_secret: SecretStr | None = None
    """API secret, read only by the processes that sign requests."""
    paper_exchange_port: int = Field(8765, ge=1, le=65535)
    """Port of `stack up`'s paper exchange (REST and WebSocket)."""
    paper_rest_url: str | None = None
    """The paper exchange to trade on (default http://127.0.0.1:PAPER_EXCHANGE_PORT)."""
    paper_ws_url: str | None = None
    """Its WebSocket address (default: PAPER_REST_URL with ws://, the same port)."""
    testnet_rest_url: str = "https://demo-fapi.binance.com"
    """REST address in testnet mode."""
    testnet_ws_url: str = "wss://fstream.binancefuture.com"
    """WebSocket address in testnet mode."""
    live_rest_url: str = "https://fapi.binance.com"
    """REST address in live mode."""
    live_ws_url: str = "wss://fstream.binance.com"
    """WebSocket address in live mode."""
    binance_archive_url: str = Field("https://data.binance.vision", pattern=r"^https?://\S+$")
    """Binance's public data archive, for `qtrader data download` (a mirror of its layout works too)."""
    binance_recv_window_ms: int = Field(5000, ge=1, le=60000)
    """recvWindow of signed requests (ms): the venue refuses a request older than this."""
    binance_timeout_s: float = Field(10.0, gt=0)
    """HTTP timeout of one venue request (seconds)."""
    binance_weight_limit_1m: int = Field(2400, ge=1)
    """The venue's request weight per minute per IP: workers slow down before it, not after the 429."""
    binance_weight_headroom_pct: float = Field(80.0, gt=0, le=100)
    """Share of the weight limit entries may use; exits may use half of what is left above it."""
    binance_weight_budget_id: str = Field(default_factory=socket.gethostname, pattern=r"^[^\s]*$")
    """Workers behind one public IP share one weight budget in Redis under this name (the venue counts
    weight per IP); empty: each worker paces on its own count."""

    # --- signal layer: market data, inference, bar-close and universe schedules ---
    signal_timeframe: str = "1h"
    """Bar size of features, models and the bar-close schedule: 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h or 1d."""
    signal_confidence_threshold: float = Field(0.55, gt=0.5, le=1)
    """Ensemble confidence a decision needs to become an intent."""
    signal_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["xgboost", "lightgbm", "nhits", "patchtst"]
    )
    """Models of the ensemble: xgboost, lightgbm, nhits, patchtst."""
    signal_equity_usdt: Decimal | None = Field(None, gt=0)
    """Equity the signal sizing uses; default PAPER_START_BALANCE_USDT."""
    signal_risk_fraction: Decimal = Field(Decimal("0.005"), gt=0, le=1)
    """Share of the equity one signal trade loses at its stop."""
    signal_leverage: int = Field(5, ge=1, le=125)
    """Leverage of signal trades."""
    model_registry_dir: Path | None = None
    """Model registry folder; default QT_HOME/models."""
    universe_top_n: int = Field(10, ge=1, le=500)
    """Symbols in the universe: the top N by 24 h quote volume within the allowlist (the seed's
    INTENT_BRIDGE_USE_TOP10)."""
    universe_interval_seconds: float = Field(3600.0, gt=0)
    """Period of the universe Schedule."""
    bar_close_interval_seconds: float | None = Field(None, gt=0)
    """Bar-close schedule period; default one bar of SIGNAL_TIMEFRAME (divided by the replay speed
    when MARKET_DATA_SOURCE=replay, whose bars close faster than the wall clock)."""
    market_data_source: Literal["venue", "replay"] = "venue"
    """Where market data comes from: the venue's streams, or a replay of the kline files pushed into
    the paper exchange (`qtrader paper`)."""
    market_replay_speed: float = Field(3600.0, gt=0)
    """Replayed market seconds per wall second (MARKET_DATA_SOURCE=replay)."""
    market_backfill_bars: int = Field(500, ge=150, le=1500)
    """Closed bars fetched per symbol at start and after each reconnect."""
    market_stream_maxlen: int = Field(10_000, ge=100)
    """Length cap of the Redis market streams (klines, ticks, features)."""
    market_data_metrics_port: int = Field(9468, ge=1, le=65535)
    """Metrics port of the market-data service."""
    inference_metrics_port: int = Field(9469, ge=1, le=65535)
    """Metrics port of the inference worker."""

    # --- continuous learning: the RetrainWorkflow schedule (workflows/retrain.py) ---
    retrain_interval_hours: float = Field(24.0, gt=0)
    """Period of the retrain Schedule (hours)."""
    retrain_models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["xgboost", "lightgbm"])
    """Models the retrain trains challengers of."""
    retrain_symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    """Symbols whose klines the retrain trains and scores on."""
    retrain_window_bars: int = Field(8000, ge=300, le=200_000)
    """Newest bars used: training plus holdout."""
    retrain_holdout_bars: int = Field(720, ge=24)
    """The newest of them, scored out of sample."""
    retrain_min_auc_gain: float = Field(0.005, ge=0, le=0.5)
    """AUC a challenger must gain over the champion, on the same rows, to be promoted."""
    shadow_mode: bool = False
    """Winners go to shadow first (predictions published with shadow=true, never traded) and are
    promoted only when they beat the champion again on the bars that come after."""

    # --- alerts: the notifier (`qtrader alerts`, alerts/) ---
    alert_webhook_urls: SecretStr | None = None
    """Slack / Discord (or compatible) incoming-webhook URLs, comma-separated; a webhook URL carries its
    own credential, so the whole value is a secret."""
    alert_telegram_bot_token: SecretStr | None = None
    """Telegram bot token (with ALERT_TELEGRAM_CHAT_ID): alerts also go to Telegram's bot API."""
    alert_telegram_chat_id: str | None = None
    """The Telegram chat the bot posts to (with ALERT_TELEGRAM_BOT_TOKEN)."""
    alert_telegram_api_url: str = "https://api.telegram.org"
    """Telegram's bot API address (a local receiver in tests)."""
    alerts_metrics_port: int = Field(9471, ge=1, le=65535)
    """Port of the notifier's metrics endpoint."""
    alert_max_attempts: int = Field(5, ge=1, le=20)
    """Tries per alert and target, the first included."""
    alert_retry_base_seconds: float = Field(1.0, gt=0, le=60)
    """First wait before a retry, doubling after each failure."""
    alert_retry_max_seconds: float = Field(30.0, gt=0, le=600)
    """Cap of one wait between tries (a receiver's Retry-After too)."""
    alert_http_timeout_seconds: float = Field(10.0, gt=0, le=120)
    """Timeout of one post to a target."""
    alert_rate_limit_count: int = Field(3, ge=1, le=1000)
    """A flapping condition: at most this many alerts per window; the rest are summed up in one."""
    alert_rate_limit_window_seconds: float = Field(600.0, gt=0)
    """The window of ALERT_RATE_LIMIT_COUNT."""
    alert_task_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["trade-lifecycle", "exchange", "inference"]
    )
    """Task queues whose workers are watched (their pollers, as Temporal reports them), comma-separated."""
    alert_worker_stale_seconds: float = Field(120.0, gt=0)
    """A queue with no poll for this long has no worker (idle workers poll about once a minute)."""
    alert_check_interval_seconds: float = Field(15.0, gt=0)
    """How often the worker and daily-summary checks run."""
    alert_daily_summary_at: str = "00:00"
    """UTC time of day (HH:MM) the summary of the day before is sent; "off" sends none."""

    # --- paper exchange ---
    paper_start_balance_usdt: Decimal = Field(Decimal("10000"), gt=0)
    """Starting wallet of `stack up`'s paper exchange (a fresh state file only) and default equity."""
    paper_data_dir: Path = Field(
        SHIPPED_DATA_DIR, validation_alias=AliasChoices("PAPER_DATA_DIR", "QT_DATA_DIR")
    )
    """Folder of `binance-futures-<SYMBOL>-<tf>.csv.gz` kline files the paper exchange serves;
    QT_DATA_DIR also points training, backtests and the market-data replay there."""
    paper_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Symbols `stack up`'s paper exchange lists, each with klines in the data folder (the ten built-in
    symbols need none under manual prices), BTCUSDT always among them (the signal layer's context);
    empty: the built-in ten (under replay, those with klines there). `stack up --symbols` overrides it."""

    @field_validator("apply_allowlist", "retrain_symbols", "paper_symbols", mode="before")
    @classmethod
    def _split_allowlist(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("dashboard_token", mode="before")
    @classmethod
    def _check_dashboard_token(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or raw == "":  # `DASHBOARD_TOKEN=` in a .env: no token, a read-only dashboard
            return None
        if isinstance(raw, str) and len(raw.strip()) < 12:
            # a short token is guessable, and it guards the kill switch and flatten-all
            raise ValueError("must be at least 12 characters (e.g. `openssl rand -hex 16`)")
        return value

    @field_validator("signal_models", "retrain_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("signal_models", "retrain_models")
    @classmethod
    def _check_models(cls, value: list[str]) -> list[str]:
        known = ("xgboost", "lightgbm", "nhits", "patchtst")
        bad = [m for m in value if m not in known]
        if bad or not value:
            raise ValueError(f"unknown or no models {bad}; known: {', '.join(known)}")
        return value

    @field_validator("alert_task_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "alert_webhook_urls", "alert_telegram_bot_token", "alert_telegram_chat_id", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("alert_webhook_urls")
    @classmethod
    def _check_webhooks(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        urls = [u.strip() for u in value.get_secret_value().split(",") if u.strip()]
        for n, url in enumerate(urls, 1):
            if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
                # The URL itself is a credential: say which one, never what it is.
                raise ValueError(f"URL #{n} is not an http:// or https:// URL with a host")
        return SecretStr(",".join(urls)) if urls else None

    @field_validator("alert_telegram_api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("alert_daily_summary_at")
    @classmethod
    def _check_summary_at(cls, value: str) -> str:
        text = value.strip().lower()
        if text == "off":
            return text
        hh, sep, mm = text.partition(":")
        if not (sep and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60 and len(mm) == 2):
            raise ValueError("must be HH:MM (UTC) or off")
        return f"{int(hh):02d}:{mm}"

    @field_validator("signal_timeframe")
    @classmethod
    def _check_timeframe(cls, value: str) -> str:
        if value not in SIGNAL_TIMEFRAMES:
            raise ValueError(f"{value!r} is not one of {', '.join(SIGNAL_TIMEFRAMES)}")
        return value

    @field_validator("apply_allowlist", "retrain_symbols", "paper_symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            if symbol == "*":  # every symbol
                continue
            if not symbol.isalnum() or not symbol.isupper():
                raise ValueError(f"{symbol!r} is not a symbol like BTCUSDT")
        return value

    @field_validator("paper_symbols")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:  # the exchange lists symbols, it has no "every symbol": name them
            raise ValueError("'*' is not a symbol: name the symbols to serve, e.g. BTCUSDT,ETHUSDT")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.gov_max_notional_per_trade_usdt > self.gov_max_total_notional_usdt:
            raise ValueError("GOV_MAX_NOTIONAL_PER_TRADE_USDT must not exceed GOV_MAX_TOTAL_NOTIONAL_USDT")
        if (self.alert_telegram_bot_token is None) != (self.alert_telegram_chat_id is None):
            raise ValueError("ALERT_TELEGRAM_BOT_TOKEN and ALERT_TELEGRAM_CHAT_ID must be set together")
        if self.trading_mode is TradingMode.LIVE and not self.live_trading_enabled:
            raise ValueError(
                "TRADING_MODE=live needs LIVE_TRADING_ENABLED=true as well: live mode must be asked for "
                "explicitly"
            )
        return self

    # --- derived ---
    @property
    def rest_url(self) -> str:
        if self.trading_mode is TradingMode.PAPER:
            return self.paper_rest_url or f"http://127.0.0.1:{self.paper_exchange_port}"
        if self.trading_mode is TradingMode.TESTNET:
            return self.testnet_rest_url
        return self.live_rest_url

    @property
    def ws_url(self) -> str:
        if self.trading_mode is TradingMode.PAPER:
            if self.paper_ws_url:
                return self.paper_ws_url
            if self.paper_rest_url:  # the paper exchange serves both on one port
                return "ws" + self.paper_rest_url.removeprefix("http")
            return f"ws://127.0.0.1:{self.paper_exchange_port}"
        if self.trading_mode is TradingMode.TESTNET:
            return self.testnet_ws_url
        return self.live_ws_url

    @property
    def bar_seconds(self) -> float:
        """Wall seconds between two bar closes (replayed bars close `market_replay_speed` times faster)."""
        bar = float(SIGNAL_TIMEFRAMES[self.signal_timeframe])
        return bar / self.market_replay_speed if self.market_data_source == "replay" else bar

    @property
    def registry_dir(self) -> Path:
        return self.model_registry_dir or self.qt_home / "models"

    @property
    def alert_targets_configured(self) -> bool:
        """True when the notifier has somewhere to post (a webhook, or Telegram)."""
        return bool(self.alert_webhook_urls or self.alert_telegram_bot_token)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/0"


_SECRET_VARIABLES = {
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "DATABASE_URL",
    "DASHBOARD_TOKEN",
    "ALERT_WEBHOOK_URLS",
    "ALERT_TELEGRAM_BOT_TOKEN",
}


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one error naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper()
            if not name:
                problems.append(err["msg"].removeprefix("Value error, "))
            elif name in _SECRET_VARIABLES:
                problems.append(f"{name}: {err['msg']}")
            else:
                problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
