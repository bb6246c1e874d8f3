"""kubetrain/settings.py: one typed object for every KUBETRAIN_* variable, documented once."""

from __future__ import annotations

import re

import pytest

from kubetrain.settings import Settings, SettingsError, get_settings
from tests.conftest import REPO_ROOT


def test_readme_configuration_table_lists_exactly_the_settings() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(KUBETRAIN_[A-Z_]+)` \|", section, re.MULTILINE))
    declared = {f"KUBETRAIN_{name.upper()}" for name in Settings.model_fields}
    assert documented == declared


def test_a_bad_value_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETRAIN_TRAIN_WORKERS", "0")
    with pytest.raises(SettingsError, match=r"KUBETRAIN_TRAIN_WORKERS: .*fix or unset it"):
        get_settings()


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    # Assembled at run time: no key-shaped block sits in the repository.
    armour = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_DATA", f"{armour}\nAAAA")
    monkeypatch.setenv("KUBETRAIN_SSH_KEY_PASSPHRASE", "hunter2")
    settings = get_settings()
    assert "AAAA" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert settings.ssh_key_passphrase is not None
    assert settings.ssh_key_passphrase.get_secret_value() == "hunter2"
