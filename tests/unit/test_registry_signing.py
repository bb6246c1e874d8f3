"""kubetrain/registry/signing.py: signed manifests; tampered or unsigned versions never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubetrain.inference import load_version
from kubetrain.registry import signing
from kubetrain.registry.signing import SignatureError, SigningKeyError
from kubetrain.store import open_store
from tests.registry_helpers import (
    EXP,
    make_version,
    private_pem,
    rewrite_model_and_manifest,
    version_name,
)

V1 = version_name(1)


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Ed25519PrivateKey:
    """A signing key in a file (as a mounted Secret) and signature checking on."""
    for name in ("SIGNING_KEY", "SIGNING_KEY_DATA", "VERIFY_KEY", "VERIFY_KEY_DATA"):
        monkeypatch.delenv(f"KUBETRAIN_{name}", raising=False)
    generated = Ed25519PrivateKey.generate()
    path = tmp_path / "signing.pem"
    path.write_text(private_pem(generated))
    monkeypatch.setenv("KUBETRAIN_SIGNING_KEY", str(path))
    return generated


def test_signed_version_loads(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with open_store(url) as store:
        manifest = make_version(store, tmp_path, V1, {"lda": 0.8}, key=key)
    assert manifest["signature"]["key_id"] == signing.key_id(key.public_key())
    assert load_version(url, EXP, V1, tmp_path / "work").models["lda"]["version"] == V1


def test_model_and_manifest_rewritten_together_is_refused_before_loading(
    key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, marker = str(tmp_path / "store"), tmp_path / "code-ran"
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8}, key=key)
    rewrite_model_and_manifest(tmp_path / "store", V1, marker)
    # The checksums agree again, so without signatures this version would load (and run code).
    with pytest.raises(SignatureError, match="does not verify"):
        load_version(url, EXP, V1, tmp_path / "work")
    assert not marker.exists()
    assert not (tmp_path / "work" / V1).exists()
    # Control: with signature checking off, the same version passes every checksum and runs code.
    monkeypatch.delenv("KUBETRAIN_SIGNING_KEY")
    load_version(url, EXP, V1, tmp_path / "unchecked")
    assert marker.exists()


def test_tampered_or_foreign_signature_is_refused(
    key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "store")
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8}, key=key)
    path = tmp_path / "store" / EXP / V1 / "manifest.json"
    manifest = json.loads(path.read_text())
    value = bytearray(manifest["signature"]["value"].encode())
    value[5] = ord("A") if value[5] != ord("A") else ord("B")
    manifest["signature"]["value"] = value.decode()
    path.write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="does not verify"):
        load_version(url, EXP, V1, tmp_path / "w1")
    # Signed by someone else's key: refused under ours, too.
    other = Ed25519PrivateKey.generate()
    path.write_text(json.dumps(signing.sign_manifest(manifest, other)))
    with pytest.raises(SignatureError, match="key id"):
        load_version(url, EXP, V1, tmp_path / "w2")
    # Verification key alone (a predict pod needs no private key), as an OpenSSH public key.
    monkeypatch.delenv("KUBETRAIN_SIGNING_KEY")
    openssh = other.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    monkeypatch.setenv("KUBETRAIN_VERIFY_KEY_DATA", openssh.decode())
    assert load_version(url, EXP, V1, tmp_path / "w3").version == V1


def test_unsigned_version_refused_when_checking_is_on(
    key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "store")
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8})  # no key: unsigned
    with pytest.raises(SignatureError, match="not signed"):
        load_version(url, EXP, V1, tmp_path / "w1")
    monkeypatch.delenv("KUBETRAIN_SIGNING_KEY")
    monkeypatch.setenv("KUBETRAIN_VERIFY_KEY_DATA", public_pem(key))
    with pytest.raises(SignatureError, match="not signed"):
        load_version(url, EXP, V1, tmp_path / "w2")
    monkeypatch.delenv("KUBETRAIN_VERIFY_KEY_DATA")  # checking off: loads as before
    assert load_version(url, EXP, V1, tmp_path / "w3").version == V1


def test_signature_covers_every_field_and_survives_a_json_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    manifest = {"version": V1, "models": {"lda": {"cv": {"accuracy": {"mean": 0.1 + 0.2}}}}}
    signed = signing.sign_manifest(manifest, key)
    reread = json.loads(json.dumps(signed, indent=2, sort_keys=True))
    signing.verify_manifest(reread, key.public_key(), "v")
    reread["models"]["lda"]["cv"]["accuracy"]["mean"] = 0.31
    with pytest.raises(SignatureError):
        signing.verify_manifest(reread, key.public_key(), "v")


def test_key_material_never_appears_in_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("SIGNING_KEY", "SIGNING_KEY_DATA", "VERIFY_KEY", "VERIFY_KEY_DATA"):
        monkeypatch.delenv(f"KUBETRAIN_{name}", raising=False)
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    body = rsa_pem.splitlines()[3]
    monkeypatch.setenv("KUBETRAIN_SIGNING_KEY_DATA", rsa_pem)
    with pytest.raises(SigningKeyError) as raised:
        signing.signing_key()
    assert "Ed25519" in str(raised.value)
    assert body not in str(raised.value)
    assert raised.value.__cause__ is None  # no chained parser error carrying the input

    path = tmp_path / "truncated.pem"
    path.write_text(private_pem(Ed25519PrivateKey.generate())[:-40])
    monkeypatch.delenv("KUBETRAIN_SIGNING_KEY_DATA")
    monkeypatch.setenv("KUBETRAIN_SIGNING_KEY", str(path))
    with pytest.raises(SigningKeyError, match="KUBETRAIN_SIGNING_KEY does not hold") as raised:
        signing.signing_key()
    assert path.read_text().splitlines()[1][:20] not in str(raised.value)
    # Key text pasted into the path setting is refused without echoing it.
    monkeypatch.setenv("KUBETRAIN_SIGNING_KEY", rsa_pem)
    from kubetrain.settings import SettingsError, get_settings

    with pytest.raises(SettingsError) as raised_settings:
        get_settings()
    assert body not in str(raised_settings.value)
    assert "KUBETRAIN_SIGNING_KEY" in str(raised_settings.value)


def test_required_signatures_fail_without_a_key_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SIGNING_KEY", "SIGNING_KEY_DATA", "VERIFY_KEY", "VERIFY_KEY_DATA"):
        monkeypatch.delenv(f"KUBETRAIN_{name}", raising=False)
    url = str(tmp_path / "store")
    with open_store(url) as store:
        make_version(store, tmp_path, V1, {"lda": 0.8})  # unsigned
    assert signing.signing_key() is None  # not required: signing is skipped, as before
    monkeypatch.setenv("KUBETRAIN_REQUIRE_SIGNATURES", "true")
    # A train pod whose Secret name is misspelled has no key: it fails instead of publishing
    # unsigned versions, and the message says where the key should come from.
    with pytest.raises(SigningKeyError) as raised:
        signing.signing_key()
    for fact in ("KUBETRAIN_REQUIRE_SIGNATURES", "KUBETRAIN_SIGNING_KEY", "signing.pem"):
        assert fact in str(raised.value)
    # predict: refused before the version is fetched.
    with pytest.raises(SigningKeyError) as raised:
        load_version(url, EXP, V1, tmp_path / "work")
    for fact in ("KUBETRAIN_REQUIRE_SIGNATURES", "KUBETRAIN_VERIFY_KEY", "verify.pem"):
        assert fact in str(raised.value)
    assert not (tmp_path / "work" / V1).exists()
    # A verification key alone is enough for predict; the unsigned version is then refused.
    monkeypatch.setenv("KUBETRAIN_VERIFY_KEY_DATA", public_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(SignatureError, match="not signed"):
        load_version(url, EXP, V1, tmp_path / "work")
