"""Settings: one frozen pydantic-settings model per concern, env prefix `CRISISWATCH_`.

The environment is read once, at the entry point (`consumers.cli.main`), and values are passed down;
nothing below the CLI reads `os.environ`.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.engine import Rules, StartMode
from streams.errors import ConfigurationError
from streams.pseudonym import Pseudonymiser


class RulesSettings(BaseSettings):
    """The national rules' settings (STANDARDS.md); defaults are the documented ones."""

    model_config = SettingsConfigDict(env_prefix="CRISISWATCH_", frozen=True, extra="ignore")

    ucr_limit_seconds: int = Field(7200, gt=0, description="2-hour limit (R4), seconds")
    ucr_at_risk_seconds: int = Field(5400, ge=0, description="2-hour at-risk threshold")
    reablement_days: int = Field(2, ge=0, description="2-day limit in local days (R5)")
    reablement_at_risk_time: time = Field(time(12, 0), description="2-day at-risk local time")
    start_mode: StartMode = Field(StartMode.RECEIVED, description="clock start (R1)")
    timezone: str = Field("Europe/London", description="local time zone (IANA)")

    def rules(self) -> Rules:
        try:
            return Rules(
                ucr_limit_seconds=self.ucr_limit_seconds,
                ucr_at_risk_seconds=self.ucr_at_risk_seconds,
                reablement_days=self.reablement_days,
                reablement_at_risk_time=self.reablement_at_risk_time,
                start_mode=self.start_mode,
                timezone=self.timezone,
            )
        except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
            raise ConfigurationError(f"bad rules setting: {exc}") from exc


class PrivacySettings(BaseSettings):
    """The key of the NHS-number pseudonyms (a secret: from the environment or a file)."""

    model_config = SettingsConfigDict(env_prefix="CRISISWATCH_", frozen=True, extra="ignore")

    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None

    @field_validator("pseudonym_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    def pseudonymiser(self) -> Pseudonymiser:
        if self.pseudonym_key is not None:
            key = self.pseudonym_key.get_secret_value().encode()
        elif self.pseudonym_key_file is not None:
            key = self.pseudonym_key_file.read_bytes().strip()
        else:
            return Pseudonymiser(None)
        if len(key) < 16:
            raise ConfigurationError("the pseudonym key must be at least 16 bytes")
        return Pseudonymiser(key)
