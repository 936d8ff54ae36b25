"""Configuration: one TOML file parsed once into frozen Structs; "env:NAME" reads a secret."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config.toml")


class Secret(str):
    """A string that never shows itself in repr, logs or error messages."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 65536
    access_log: bool = True  # one line per request (credentials in query strings masked)


class ApiConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rate_limit_per_s: float = 50.0
    rate_limit_burst: float = 100.0


class DatabaseConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str = "var/gateway.db"
    # Finished webhook deliveries (with their attempt log) and carriers' callback ids are deleted
    # this many days after; messages are kept. 0 keeps everything.
    retention_days: Annotated[float, msgspec.Meta(ge=0, le=36500)] = 30.0

    def __post_init__(self) -> None:
        # Shorter than a day could delete a delivery while a repeat attempt of it is in flight.
        if 0 < self.retention_days < 1:
            raise ValueError("retention_days must be 0 (keep everything) or at least 1")


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    jwt_secret: str = ""
    default_token_ttl_hours: float = 24.0


Positive = Annotated[float, msgspec.Meta(gt=0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Delays = tuple[Annotated[float, msgspec.Meta(ge=0)], ...]


class WebhooksConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeout_s: Positive = 15.0
    retry_schedule_s: Delays = (5, 300, 1800, 7200, 18000, 36000, 36000)
    allowed_networks: tuple[str, ...] = ()
    # Deliveries in flight at once. Each holds its slot through its commit as well as its HTTP
    # exchange, so more in flight hide that wait: with one endpoint allowed every slot, 128
    # drained a local receiver about 15 % faster than 64 (bench/delivery.py, RESULTS). With 4 per
    # endpoint it matters from 32 busy endpoints on; a dead endpoint still holds only its own 4.
    concurrency: AtLeastOne = 128
    per_endpoint_concurrency: AtLeastOne = 4  # a slow endpoint holds at most this many
    jitter: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.2  # +-20 % on scheduled delays
    disable_after_s: Positive = 432000.0  # an endpoint failing this long is disabled (5 days)
    poll_interval_s: Positive = 1.0
    # An endpoint failing this many attempts in a row is paused for breaker_cooldown_s, then
    # probed one attempt at a time (0: never paused). Its events wait without spending retries.
    breaker_failures: Annotated[int, msgspec.Meta(ge=0)] = 10
    breaker_cooldown_s: Positive = 30.0

    def __post_init__(self) -> None:
        for cidr in self.allowed_networks:
            try:
                ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise ValueError(f"allowed_networks entry {cidr!r} is not a CIDR: {exc}") from None


class DispatchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    send_deadline_s: Positive = 60.0
    # A target `sent` with no final report this long after becomes dlr_timeout (a late report
    # still applies).
    dlr_deadline_s: Positive = 86400.0
    attempt_timeout_s: Positive = 10.0
    retry_delays_s: Annotated[Delays, msgspec.Meta(min_length=1)] = (1, 2, 5, 10, 20)
    concurrency: AtLeastOne = 16
    poll_interval_s: Positive = 1.0


class SandboxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    secret: str = ""
    base_url: str = ""
    dlr_delay_s: float = 1.0
    fail_destinations: tuple[str, ...] = ("+15005550001",)
    fail_error_code: str = "30003"


class TwilioConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    account_sid: str = ""
    auth_token: str = ""
    messaging_service_sid: str = ""  # send through a Messaging Service instead of `From`
    webhook_shared_key: str = ""  # SharedKey secret for HMAC_SHA256-signed webhooks (optional)
    base_url: str = "https://api.twilio.com"


class TelnyxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    api_key: str = ""
    public_key: str = ""  # base64 Ed25519 key from the Telnyx portal
    messaging_profile_id: str = ""
    base_url: str = "https://api.telnyx.com"


class VonageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    api_key: str = ""
    api_secret: str = ""
    signature_secret: str = ""
    signature_method: Literal["md5hash", "md5", "sha1", "sha256", "sha512"] = "md5hash"
    base_url: str = "https://rest.nexmo.com"


class PlivoConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    auth_id: str = ""
    auth_token: str = ""
    # Legacy V2 signatures cover the URL only, not the body: refused unless turned on.
    accept_v2: bool = False
    base_url: str = "https://api.plivo.com"


class SinchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    service_plan_id: str = ""
    api_token: str = ""
    webhook_secret: str = ""  # the HMAC secret Sinch signs callbacks with
    base_url: str = "https://us.sms.api.sinch.com"


class MessageBirdConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    access_key: str = ""
    signing_key: str = ""
    base_url: str = "https://rest.messagebird.com"


class CarriersConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One optional section per carrier; a carrier is live when its section is present."""

    sandbox: SandboxConfig | None = None
    twilio: TwilioConfig | None = None
    telnyx: TelnyxConfig | None = None
    vonage: VonageConfig | None = None
    plivo: PlivoConfig | None = None
    sinch: SinchConfig | None = None
    messagebird: MessageBirdConfig | None = None

    def sections(self) -> dict[str, msgspec.Struct]:
        """The configured carriers by name."""
        return {
            field: section
            for field in self.__struct_fields__
            if (section := getattr(self, field)) is not None
        }


class InboundConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Parts of a concatenated inbound SMS wait this long for the rest, then go out as they are.
    reassembly_wait_s: Positive = 60.0


class IngestConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Carrier callbacks are committed to an inbox and answered; a second process turns them into
    # messages, on another core. false: the server's own process does it (one core).
    normaliser_process: bool = True
    # Its CPU priority: "low" is niceness 19 (the server comes first), "idle" runs only on a core
    # nothing else wants, "normal" competes evenly. Why "low": gateway/normaliser_process.py.
    normaliser_priority: Literal["idle", "low", "normal"] = "low"
    # Callbacks waiting to be normalised beyond which new ones are answered 503 (carriers retry).
    max_backlog: AtLeastOne = 1_000_000


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    api: ApiConfig = ApiConfig()
    database: DatabaseConfig = DatabaseConfig()
    auth: AuthConfig = AuthConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    dispatch: DispatchConfig = DispatchConfig()
    carriers: CarriersConfig = CarriersConfig()
    inbound: InboundConfig = InboundConfig()
    ingest: IngestConfig = IngestConfig()


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (or config.toml in the working folder, else built-in defaults)."""
    environ = os.environ if environ is None else environ
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    try:
        raw = msgspec.toml.decode(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return config_from_mapping(raw, environ, source=str(path))


def config_from_mapping(
    raw: Any, environ: Mapping[str, str] | None = None, *, source: str = "config"
) -> Config:
    environ = os.environ if environ is None else environ
    resolved = _resolve_env(raw, environ, key="")
    try:
        return msgspec.convert(resolved, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _resolve_env(value: Any, environ: Mapping[str, str], key: str) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env(v, environ, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, environ, key) for v in value]
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            raise ConfigError(
                f"config key '{key}' reads environment variable {name}, which is not set"
            )
        return Secret(environ[name])
    return value
