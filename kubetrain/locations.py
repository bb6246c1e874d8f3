"""The one parser for every place kubetrain reads from or writes to.

A location is a plain path, `file:///abs/path`, `http(s)://host/path` (data only) or
`sftp://user@host[:port]/path`. Data sources, stores and the SFTP backend all parse through
`parse_location`, so the accepted forms and the error texts are written once.

`redact_url` is what gets recorded (manifests, artifacts, logs): credentials in the netloc and
sensitive query parameters never leave the process; the data's sha256 identifies it instead.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from kubetrain.errors import UserError

SFTP_FORM = "sftp://user@host[:port]/path (e.g. sftp://models@store.example:2222/srv/models)"
MAX_QUOTED_CHARS = 120
REDACTED = "REDACTED"
# Query parameters whose values are credentials in the wild (presigned URLs, API tokens).
SENSITIVE_QUERY_KEYS = frozenset(
    {
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "password",
        "passwd",
        "pwd",
        "signature",
        "sig",
        "auth",
        "credential",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "se",
        "sp",
        "sv",
    }
)


class LocationError(UserError):
    """A location (path or URL) that kubetrain cannot use; the message gives the valid forms."""


@dataclass(frozen=True)
class LocalPath:
    """A file or folder on this machine."""

    path: Path


@dataclass(frozen=True)
class HttpUrl:
    """An http(s):// URL to download (credentials, if any, stay in `url`; record `display`)."""

    url: str

    @property
    def display(self) -> str:
        """The URL with credentials and sensitive query values redacted."""
        return redact_url(self.url)


@dataclass(frozen=True)
class SftpUrl:
    """A parsed sftp://user@host[:port]/path (path absolute; /~/x is relative to the home)."""

    user: str
    host: str
    port: int
    path: str

    @property
    def display(self) -> str:
        """The URL in canonical form (never with a password: those are refused)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sftp://{self.user}@{host}:{self.port}{self.path}"


Location = LocalPath | HttpUrl | SftpUrl


def quote_value(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """repr() of a value for a message, truncated so that no message grows with the input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}…(+{len(text) - limit + 1} chars)"


def redact_url(value: str) -> str:
    """value with user:password and sensitive query values replaced; other text unchanged."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return REDACTED
    if not parts.scheme or len(parts.scheme) == 1:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        if parts.scheme in ("http", "https"):
            netloc = f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if k.lower() in SENSITIVE_QUERY_KEYS else v) for k, v in pairs],
            safe="/",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_location(
    value: str,
    *,
    what: str = "location",
    allow_http: bool = True,
    error: type[UserError] = LocationError,
) -> Location:
    """Parse a path or URL; raise `error` naming `what`, the problem and the accepted forms."""
    if not isinstance(value, str) or not value.strip():
        raise error(f"{what} is empty; give a path or a URL")
    if any(ord(c) < 32 for c in value):
        raise error(f"{what} {quote_value(value)} contains control characters; remove them")
    forms = "a path, file:///abs/path, " + ("http(s)://…, " if allow_http else "") + SFTP_FORM
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise error(
            f"{what} {quote_value(redact_url(value))} is not a valid URL ({exc}); use {forms}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return LocalPath(Path(value).expanduser())
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise error(
                f"{what} {quote_value(value)}: file:// URLs must be absolute (file:///abs/path); "
                "for a relative path give a plain path"
            )
        return LocalPath(Path(unquote(parts.path)))
    if scheme in ("http", "https") and allow_http:
        if not parts.hostname:
            raise error(f"{what} {quote_value(redact_url(value))} names no host; use {forms}")
        return HttpUrl(value)
    if scheme == "sftp":
        return _parse_sftp(value, what, error)
    raise error(
        f"{what} {quote_value(redact_url(value))}: unsupported scheme {scheme!r}; use {forms}"
    )


def parse_sftp_url(
    url: str, what: str = "destination", error: type[UserError] = LocationError
) -> SftpUrl:
    """Parse and check an sftp:// URL; the error names what is wrong and the expected form."""
    location = parse_location(url, what=what, allow_http=False, error=error)
    if not isinstance(location, SftpUrl):
        raise error(f"{what} {quote_value(url)} is not an sftp:// URL; expected {SFTP_FORM}")
    return location


def _parse_sftp(url: str, what: str, error: type[UserError]) -> SftpUrl:
    parts = urlsplit(url)
    if parts.password is not None:
        raise error(
            f"{what}: passwords in sftp:// URLs are refused (they end up in logs and Prefect "
            "parameters); remove it and use a key: set KUBETRAIN_SSH_KEY"
        )
    shown = quote_value(url)
    if not parts.username:
        raise error(f"{what} {shown} names no user; expected {SFTP_FORM}")
    if not parts.hostname:
        raise error(f"{what} {shown} names no host; expected {SFTP_FORM}")
    try:
        port = 22 if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise error(f"{what} {shown} has an invalid port; expected {SFTP_FORM}")
    if parts.query or parts.fragment:
        raise error(f"{what} {shown} must not have a query or fragment; expected {SFTP_FORM}")
    path = unquote(parts.path)
    if posixpath.normpath(path or "/").strip("/") in ("", "."):  # "/", "//", "/./", ...
        raise error(f"{what} {shown} names no directory on the server; expected {SFTP_FORM}")
    if any(ord(c) < 32 for c in path) or ".." in path.split("/"):
        raise error(f"{what} {shown}: the path must not contain '..' or control characters")
    return SftpUrl(unquote(parts.username), parts.hostname, port, posixpath.normpath(path))
