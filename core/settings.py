"""One Settings object, read from the environment (prefix VITALS_).

Built in `main()` / the app factory and passed down; never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import SettingsError

# Keys that appear in docs, examples or compose files: never accepted outside demo.
PLACEHOLDER_KEYS = frozenset(
    {
        "change-me",
        "changeme",
        "secret",
        "placeholder",
        "demo-secret-key-do-not-use-in-production-000",
        "replace-with-a-long-random-key",
    }
)
MIN_KEY_LENGTH = 32
DEMO_SECRET_KEY = "demo-secret-key-do-not-use-in-production-000"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITALS_", extra="ignore")

    database_url: str | None = None
    mqtt_url: SecretStr | None = None
    mqtt_admin_url: SecretStr | None = None
    secret_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    # Password `vitals db app-role` gives the application's database role.
    app_database_password: SecretStr | None = None
    # A local directory (a Path) or an `s3://bucket/prefix` URL (a str; endpoint,
    # region and credentials from the standard AWS_* variables).
    export_dir: Path | str = Path("./exports")

    # MQTT ingester: instance id ("auto": lowest free number locked in
    # mqtt_instance_dir), session expiry (seconds the broker keeps a vanished
    # instance's session and share), payload bytes held unacknowledged.
    mqtt_instance: str = "0"
    mqtt_instance_dir: Path | None = None
    mqtt_session_expiry: int = Field(default=300, ge=0, le=7 * 24 * 3600)
    mqtt_max_inflight_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    # `vitals serve` worker processes (each with its own pool and writer).
    http_workers: int = Field(default=1, ge=1, le=64)

    # Writer tuning.
    pool_min_size: int = 1
    pool_max_size: int = 8
    batch_max_readings: int = 5000

    # Retention: maximum age in days per type (default for all) and grace after
    # a subject's relationship ends.
    retention_days_default: int = 3650
    retention_days: dict[str, int] = Field(default_factory=dict)
    relationship_grace_days: int = 30

    # Flow schedules (cron, UTC).
    groups_cron: str = "0 * * * *"
    export_cron: str = "30 2 * * *"
    retention_cron: str = "15 3 * * *"
    # The purge queue (erasure, research withdrawal, residency correction) is
    # worked off where the exports are: by the flows runner, every 10 minutes.
    purge_cron: str = "*/10 * * * *"
    # Statistics (EU region, weekly cells) every Monday at 04:00.
    statistics_cron: str = "0 4 * * 1"
    # Differential privacy: the epsilon a dataset (statistics of one region) may
    # spend in total over every `--epsilon` run; None: recorded, not capped.
    statistics_epsilon_budget: float | None = Field(default=None, gt=0)

    @field_validator("export_dir", mode="before")
    @classmethod
    def _export_dir(cls, v: object) -> Path | str:
        if isinstance(v, str) and v.startswith("s3://"):
            if not v[len("s3://") :].strip("/"):
                raise ValueError("an s3:// export dir needs a bucket: s3://bucket/prefix")
            return v.rstrip("/")
        if isinstance(v, str | Path):
            return Path(v)
        raise ValueError("a directory or an s3://bucket/prefix URL")

    @field_validator("retention_days_default", "relationship_grace_days")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be a positive number of days")
        return v

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError("VITALS_DATABASE_URL is required (a PostgreSQL DSN)")
        return self.database_url

    def require_secret_key(self, *, demo: bool = False) -> bytes:
        """The master key, refusing a short or placeholder key outside demo."""
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if demo and not key:
            key = DEMO_SECRET_KEY
        if not demo:
            if not key:
                raise SettingsError("VITALS_SECRET_KEY is required")
            if key.strip().lower() in PLACEHOLDER_KEYS or "change" in key.lower():
                raise SettingsError("VITALS_SECRET_KEY is a placeholder; set a random key")
            if len(key) < MIN_KEY_LENGTH:
                raise SettingsError(
                    f"VITALS_SECRET_KEY is too short ({len(key)} chars; need {MIN_KEY_LENGTH}+)"
                )
            if len(set(key)) < 8:
                raise SettingsError("VITALS_SECRET_KEY has too little variety to be random")
        return key.encode()

    def require_admin_token(self, *, demo: bool = False) -> str | None:
        """The bootstrap admin token (None when unset), refusing a short one outside demo."""
        token = self.admin_token.get_secret_value() if self.admin_token else ""
        if not token:
            return None
        if not demo:
            if len(token) < MIN_KEY_LENGTH:
                raise SettingsError(
                    f"VITALS_ADMIN_TOKEN is too short ({len(token)} chars; need "
                    f"{MIN_KEY_LENGTH}+): generate one with "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            if token.strip().lower() in PLACEHOLDER_KEYS or "change" in token.lower():
                raise SettingsError("VITALS_ADMIN_TOKEN is a placeholder; set a random token")
        return token

    def mqtt_admin(self) -> str | None:
        """The broker admin URL, when provider accounts are to be managed."""
        return self.mqtt_admin_url.get_secret_value() if self.mqtt_admin_url else None

    def require_mqtt_url(self) -> str:
        if not self.mqtt_url:
            raise SettingsError("VITALS_MQTT_URL is required (mqtt://user:pass@host:port)")
        return self.mqtt_url.get_secret_value()
