"""Every KUBETRAIN_* environment variable, in one typed settings object (pydantic-settings).

Read it with `get_settings()` at the moment a value is needed (not at import): tests and pods set
the environment after import. The README's "Configuration" table lists the same variables.
Secrets (key text, passphrases) are `SecretStr`: their repr and str never show the value.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubetrain.errors import UserError


class Settings(BaseSettings):
    """kubetrain's configuration from the environment (prefix KUBETRAIN_)."""

    model_config = SettingsConfigDict(env_prefix="KUBETRAIN_", extra="ignore")

    ssh_key: Path | None = Field(
        None, description="Path to the SSH private key file (e.g. a mounted Kubernetes Secret)."
    )
    ssh_key_data: SecretStr | None = Field(None, description="The SSH private key text itself.")
    ssh_key_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the SSH private key text."
    )
    ssh_key_passphrase: SecretStr | None = Field(None, description="The SSH key's passphrase.")
    ssh_key_passphrase_file: Path | None = Field(
        None, description="Path to a file holding the SSH key's passphrase."
    )
    ssh_key_passphrase_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the SSH key's passphrase."
    )
    known_hosts: Path = Field(
        Path("~/.ssh/known_hosts"), description="known_hosts file that SSH host keys must match."
    )
    http_timeout: float = Field(
        30.0, gt=0, description="Seconds one HTTP download attempt may take."
    )
    http_authorization: SecretStr | None = Field(
        None, description="Authorization header for HTTP data downloads, e.g. 'Bearer <token>'."
    )
    max_download_bytes: int = Field(
        4 << 30, gt=0, description="Largest data file downloaded over HTTP or SFTP (bytes)."
    )
    max_columns: int = Field(10_000, ge=2, description="Most columns a data CSV may have.")
    max_line_bytes: int = Field(
        64 << 20, ge=1 << 20, description="Longest line (bytes) a data CSV may have."
    )
    train_workers: int | None = Field(
        None,
        ge=1,
        description="Worker processes for fits (default: the CPUs this process may use).",
    )
    fanout_timeout: float = Field(
        21600.0,
        gt=0,
        description="Seconds a fan-out train run waits for its child fits (default 6 h).",
    )
    project_dir: Path | None = Field(
        None, description="Folder holding flows/ for the kubetrain command (default: found)."
    )
    image: str | None = Field(
        None, description="The container image a run executes in, recorded in the manifest."
    )
    job_deadline: timedelta | None = Field(
        None,
        description="The Kubernetes Job's deadline (ISO 8601, set by the pool's job template); "
        "train and predict time out a little before it.",
    )
    max_reschedules: int = Field(
        3, ge=0, description="A Kubernetes run rescheduled more often (evictions) fails."
    )
    signing_key: Path | None = Field(
        None, description="Path to the Ed25519 private key that signs manifests (a mounted Secret)."
    )
    signing_key_data: SecretStr | None = Field(
        None, description="The Ed25519 signing key text itself (PEM or OpenSSH format)."
    )
    require_signatures: bool = Field(
        False,
        description="Train refuses to run without a signing key and predict without a "
        "verification key, instead of skipping signing (a missing or misnamed Secret then fails "
        "the run).",
    )
    verify_key: Path | None = Field(
        None, description="Path to the Ed25519 public key versions must be signed with."
    )
    verify_key_data: str | None = Field(
        None, description="The Ed25519 public key text itself (PEM or `ssh-ed25519 …`)."
    )

    @field_validator(
        "ssh_key",
        "ssh_key_passphrase_file",
        "known_hosts",
        "project_dir",
        "signing_key",
        mode="before",
    )
    @classmethod
    def _a_path_not_a_secret(cls, value: object) -> object:
        # Key text pasted into a path variable must never be echoed: refuse it without the value.
        if isinstance(value, str) and looks_like_secret_text(value):
            raise ValueError(
                "holds what looks like private key text, not a file path; put key text in "
                "KUBETRAIN_SSH_KEY_DATA (or a Prefect Secret block) and paths here"
            )
        return value


def looks_like_secret_text(value: str) -> bool:
    """True for values that are key material rather than a path (PEM armour, newlines, size)."""
    return "PRIVATE KEY" in value or "\n" in value or "\\n" in value or len(value) > 4096


class SettingsError(UserError):
    """A KUBETRAIN_* variable holds a value of the wrong kind or out of range."""


def get_settings() -> Settings:
    """The settings as the environment holds them now; a bad value names its variable."""
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"KUBETRAIN_{str(e['loc'][0]).upper()}: {e['msg']}" for e in error.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}; fix or unset it") from None
