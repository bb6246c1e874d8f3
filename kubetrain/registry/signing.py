"""Ed25519 signatures over the manifest: a version is trusted only if the training run signed it.

The store's checksums stop accidents, not someone who can write to the store: rewrite a model and
its manifest entry together and they still agree. With a signing key configured, the train flow
signs the canonical JSON of the manifest (sorted keys, no whitespace, without the `signature`
field) and stores the signature in that field, so the signature is committed atomically with the
manifest. With a verification key configured (or a signing key, whose public half is used),
`fetch_trusted` refuses a version whose signature is missing or wrong before any model file is
loaded. Key material never reaches a message: errors name the setting, never the value.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kubetrain.errors import UserError
from kubetrain.registry.aliases import resolve
from kubetrain.settings import get_settings
from kubetrain.store import MANIFEST, ArtifactStore

SIGNATURE = "signature"
ALGORITHM = "ed25519"


class SigningKeyError(UserError):
    """A configured signing or verification key cannot be used."""


class SignatureError(UserError):
    """A version's manifest is unsigned or its signature does not verify: it is not loaded."""


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """What is signed: the manifest without its signature, as sorted, compact UTF-8 JSON."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, public fingerprint of a verification key (sha256 of its raw bytes, 16 hex)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(manifest: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of manifest with its `signature` field set."""
    signature = private_key.sign(canonical_bytes(manifest))
    return {
        **{k: v for k, v in manifest.items() if k != SIGNATURE},
        SIGNATURE: {
            "algorithm": ALGORITHM,
            "key_id": key_id(private_key.public_key()),
            "value": base64.b64encode(signature).decode(),
        },
    }


def verify_manifest(manifest: Mapping[str, Any], public_key: Ed25519PublicKey, where: str) -> None:
    """Raise SignatureError unless the manifest carries a valid signature by public_key."""
    entry = manifest.get(SIGNATURE)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("value"), str):
        raise SignatureError(
            f"{where} is not signed and signature checking is on (a verification key is "
            "configured); load only versions published by a training run with the signing key"
        )
    try:
        signature = base64.b64decode(entry["value"], validate=True)
        public_key.verify(signature, canonical_bytes(manifest))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"{where}: the manifest's signature does not verify under the configured key "
            f"(key id {key_id(public_key)}); the version was changed after signing or signed "
            "with another key: do not use it, republish it from a trusted training run"
        ) from None


def _read_key_file(path: Path, setting: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as error:
        raise SigningKeyError(
            f"{setting}: cannot read {quote_path(path)} ({error.strerror}); mount the key file "
            "there or fix the path"
        ) from None


def quote_path(path: Path) -> str:
    text = str(path)
    return repr(text if len(text) <= 200 else text[:199] + "…")


def _private_key(data: bytes, setting: str) -> Ed25519PrivateKey:
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"{setting} does not hold an unencrypted Ed25519 private key (PEM or OpenSSH "
            'format); create one with `openssl genpkey -algorithm ed25519` (README "Versions")'
        )
    return key


def _public_key(data: bytes, setting: str) -> Ed25519PublicKey:
    try:
        if data.lstrip().startswith(b"ssh-ed25519"):
            key: object = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(
            f"{setting} does not hold an Ed25519 public key (PEM or OpenSSH format); export it "
            'with `openssl pkey -pubout` from the signing key (README "Versions")'
        )
    return key


def signing_key() -> Ed25519PrivateKey | None:
    """The key train signs with; None when none is configured, unless signatures are required."""
    key = _configured_signing_key()
    if key is None and get_settings().require_signatures:
        raise SigningKeyError(
            "KUBETRAIN_REQUIRE_SIGNATURES is set but no signing key is configured: set "
            "KUBETRAIN_SIGNING_KEY (a file) or KUBETRAIN_SIGNING_KEY_DATA; in the cluster, create "
            "the Secret the job variable signing_secret_name names (default kubetrain-signing) "
            "with the key signing.pem, or check that name's spelling"
        )
    return key


def _configured_signing_key() -> Ed25519PrivateKey | None:
    """The configured private key (KUBETRAIN_SIGNING_KEY file or _DATA text), if any."""
    settings = get_settings()
    if settings.signing_key is not None:
        path_data = _read_key_file(settings.signing_key, "KUBETRAIN_SIGNING_KEY")
        return _private_key(path_data, "KUBETRAIN_SIGNING_KEY")
    if settings.signing_key_data is not None:
        text = settings.signing_key_data.get_secret_value().replace("\\n", "\n")
        return _private_key(text.encode(), "KUBETRAIN_SIGNING_KEY_DATA")
    return None


def verification_key() -> Ed25519PublicKey | None:
    """The key versions must be signed with: the configured public key, else the signing key's."""
    settings = get_settings()
    if settings.verify_key is not None:
        data = _read_key_file(settings.verify_key, "KUBETRAIN_VERIFY_KEY")
        return _public_key(data, "KUBETRAIN_VERIFY_KEY")
    if settings.verify_key_data is not None:
        return _public_key(settings.verify_key_data.encode(), "KUBETRAIN_VERIFY_KEY_DATA")
    private = _configured_signing_key()
    return private.public_key() if private is not None else None


def sign_if_configured(
    manifest: Mapping[str, Any], private_key: Ed25519PrivateKey | None
) -> dict[str, Any]:
    """The manifest signed with the key `signing_key()` returned; unchanged when it was None."""
    return dict(manifest) if private_key is None else sign_manifest(manifest, private_key)


def signature_status(manifest: Mapping[str, Any]) -> str:
    """'unsigned', 'signed (key id …)', plus whether it verifies when a key is configured."""
    entry = manifest.get(SIGNATURE)
    if not isinstance(entry, Mapping):
        return "unsigned"
    status = f"signed (key id {str(entry.get('key_id', '?'))[:16]})"
    public = verification_key()
    if public is None:
        return status
    try:
        verify_manifest(manifest, public, "manifest")
    except SignatureError:
        return status + ", does NOT verify under the configured key"
    return status + ", verified"


def fetch_trusted(
    store: ArtifactStore, experiment: str, ref: str | None, destination: Path
) -> Path:
    """Fetch the version ref names (version, @alias, LATEST/empty), checksums and signature checked.

    The signature is checked on the very manifest fetch verified the files against, after the
    download and before anything is loaded, so a manifest swapped in between cannot slip through.
    """
    public = verification_key()
    if public is None and get_settings().require_signatures:
        raise SigningKeyError(
            "KUBETRAIN_REQUIRE_SIGNATURES is set but no verification key is configured: set "
            "KUBETRAIN_VERIFY_KEY (a file) or KUBETRAIN_VERIFY_KEY_DATA; in the cluster, create "
            "the Secret the job variable signing_secret_name names with the key verify.pem, or "
            "check that name's spelling"
        )
    version = resolve(store, experiment, ref)
    local = store.fetch(experiment, version, destination, verify=True)
    if public is not None:
        manifest = json.loads((local / MANIFEST).read_text())
        try:
            verify_manifest(manifest, public, f"{store.url}/{experiment}/{version}")
        except SignatureError:
            shutil.rmtree(local, ignore_errors=True)
            raise
    return local
