"""Settings, read once at start-up from the environment (and `.env`), loud on failure.

Each process asks for the groups it needs (`Settings.require("meta", "database")`); a missing or
placeholder value stops it with one line naming the variable. Secrets are wrapped in :class:`Secret`,
whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from instagram_dm.errors import ConfigError

PLACEHOLDERS = frozenset(
    {"", "changeme", "changethis", "change-me", "placeholder", "todo", "xxx", "your-app-secret", "secret"}
)
MIN_KEY_LENGTH = 32
DEFAULT_GRAPH_VERSION = "v25.0"
ENVIRONMENTS = ("production", "development")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_GRAPH_VERSION_RE = re.compile(r"v\d+\.\d+")
DEFAULT_DB_TIMEOUT_SECONDS = 5.0
DEFAULT_MEDIA_DIR = ".local/media"
MEDIA_PATH = "/functions/v1/instagram-media"
MEDIA_STORAGES = ("local", "supabase")


class Secret:
    """A secret string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in PLACEHOLDERS or lowered.startswith(("<", "your-", "your_")) or "changeme" in lowered


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _db_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"INSTAGRAM_DB_TIMEOUT_SECONDS must be a number of seconds above 0, got {raw!r}")
    return value


def _number(name: str, raw: str, *, low: float, high: float, low_open: bool = False) -> float:
    """A number of `name` within [low, high] (or (low, high]), else one readable line."""
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    above_low = value > low if low_open else value >= low
    if not (above_low and value <= high):
        bound = "above" if low_open else "at least"
        raise ConfigError(f"{name} must be a number {bound} {low:g} and at most {high:g}, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    """A boolean setting: the usual spellings of true and false; anything else is refused, not guessed."""
    if raw.lower() not in _TRUE | _FALSE:
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw.lower() in _TRUE


def _media_storage(raw: str) -> str:
    if raw and raw not in MEDIA_STORAGES:
        raise ConfigError(f"INSTAGRAM_MEDIA_STORAGE must be 'local' or 'supabase', got {raw!r}")
    return raw


def _environment(raw: str) -> str:
    if raw not in ENVIRONMENTS:
        raise ConfigError(f"INSTAGRAM_DM_ENV must be 'production' or 'development', got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Typed configuration; see `.env.example` for each variable."""

    instagram_app_id: str = ""
    instagram_app_secret: Secret = field(default_factory=lambda: Secret(""))
    token_encryption_key: Secret = field(default_factory=lambda: Secret(""))
    # During a rotation: the key the not-yet-rotated tokens are still encrypted with (read only).
    token_encryption_key_previous: Secret = field(default_factory=lambda: Secret(""))
    oauth_redirect_uri: str = ""
    return_url: str = ""
    webhook_verify_token: Secret = field(default_factory=lambda: Secret(""))
    graph_api_version: str = DEFAULT_GRAPH_VERSION
    graph_base_url: str = "https://graph.facebook.com"
    oauth_dialog_base_url: str = "https://www.facebook.com"
    # Instagram API with Instagram Login: its own (Instagram) app, optional; unset, the provider is not offered.
    instagram_login_app_id: str = ""
    instagram_login_app_secret: Secret = field(default_factory=lambda: Secret(""))
    instagram_login_dialog_base_url: str = "https://www.instagram.com"
    instagram_login_api_base_url: str = "https://api.instagram.com"
    instagram_login_graph_base_url: str = "https://graph.instagram.com"
    database_url: Secret = field(default_factory=lambda: Secret(""))
    supabase_url: str = ""
    supabase_service_role_key: Secret = field(default_factory=lambda: Secret(""))
    supabase_jwt_secret: Secret = field(default_factory=lambda: Secret(""))
    supabase_jwks_url: str = ""
    environment: str = "production"
    oauth_bind_browser: bool = True
    # PKCE (S256) on the connect flow: a code_challenge on the dialog, the code_verifier on the exchange.
    oauth_pkce: bool = True
    worker_concurrency: int = 20
    # Every database call (connect, pool wait, statement) gives up after this long: 503, never a hang.
    db_timeout_seconds: float = DEFAULT_DB_TIMEOUT_SECONDS
    # Sending: HUMAN_AGENT-tagged human replies up to 7 days (needs Meta's Human Agent feature), the pace per
    # Instagram account shared by all workers, and how long a send of unknown outcome waits for its echo.
    human_agent_enabled: bool = False
    send_rate_per_second: float = 100.0
    send_echo_wait_seconds: float = 20.0
    # Media (docs/media.md): where copies are kept (local: a folder; supabase: the Storage bucket), the public
    # URL the API serves them at (empty: the OAuth callback's origin + MEDIA_PATH), and a signed URL's life.
    media_storage: str = ""
    media_dir: str = DEFAULT_MEDIA_DIR
    media_base_url: str = ""
    media_url_ttl_seconds: int = 300
    # GET /metrics (API and worker): with a token, `Authorization: Bearer <token>` from anywhere; without
    # one, loopback clients only.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _environment(self.environment)

    # ---- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Read the process environment, falling back to `env_file`; the environment wins."""
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)

        def get(name: str, default: str = "") -> str:
            return values.get(name, default).strip()

        concurrency_raw = get("INSTAGRAM_WORKER_CONCURRENCY", "20")
        try:
            concurrency = int(concurrency_raw)
        except ValueError:
            concurrency = 0
        if concurrency < 1:
            raise ConfigError(
                f"INSTAGRAM_WORKER_CONCURRENCY must be a whole number of at least 1, got {concurrency_raw!r}"
            )
        bind_browser = _flag("INSTAGRAM_OAUTH_BIND_BROWSER", get("INSTAGRAM_OAUTH_BIND_BROWSER", "true"))
        pkce = _flag("INSTAGRAM_OAUTH_PKCE", get("INSTAGRAM_OAUTH_PKCE", "true") or "true")
        log_level = get("LOG_LEVEL", "INFO").upper() or "INFO"
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        return cls(
            instagram_app_id=get("INSTAGRAM_APP_ID"),
            instagram_app_secret=Secret(get("INSTAGRAM_APP_SECRET")),
            token_encryption_key=Secret(get("INSTAGRAM_TOKEN_ENCRYPTION_KEY")),
            token_encryption_key_previous=Secret(get("INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS")),
            oauth_redirect_uri=get("INSTAGRAM_OAUTH_REDIRECT_URI"),
            return_url=get("INSTAGRAM_RETURN_URL"),
            webhook_verify_token=Secret(get("INSTAGRAM_WEBHOOK_VERIFY_TOKEN")),
            graph_api_version=get("META_GRAPH_API_VERSION", DEFAULT_GRAPH_VERSION) or DEFAULT_GRAPH_VERSION,
            graph_base_url=get("META_GRAPH_BASE_URL", "https://graph.facebook.com").rstrip("/"),
            oauth_dialog_base_url=get("META_OAUTH_DIALOG_BASE_URL", "https://www.facebook.com").rstrip("/"),
            instagram_login_app_id=get("INSTAGRAM_LOGIN_APP_ID"),
            instagram_login_app_secret=Secret(get("INSTAGRAM_LOGIN_APP_SECRET")),
            instagram_login_dialog_base_url=(
                get("INSTAGRAM_LOGIN_DIALOG_BASE_URL") or "https://www.instagram.com"
            ).rstrip("/"),
            instagram_login_api_base_url=(
                get("INSTAGRAM_LOGIN_API_BASE_URL") or "https://api.instagram.com"
            ).rstrip("/"),
            instagram_login_graph_base_url=(
                get("INSTAGRAM_LOGIN_GRAPH_BASE_URL") or "https://graph.instagram.com"
            ).rstrip("/"),
            database_url=Secret(get("DATABASE_URL")),
            supabase_url=get("SUPABASE_URL").rstrip("/"),
            supabase_service_role_key=Secret(get("SUPABASE_SERVICE_ROLE_KEY")),
            supabase_jwt_secret=Secret(get("SUPABASE_JWT_SECRET")),
            supabase_jwks_url=get("SUPABASE_JWKS_URL"),
            environment=_environment(get("INSTAGRAM_DM_ENV") or "production"),
            oauth_bind_browser=bind_browser,
            oauth_pkce=pkce,
            worker_concurrency=concurrency,
            db_timeout_seconds=_db_timeout(get("INSTAGRAM_DB_TIMEOUT_SECONDS", "5") or "5"),
            human_agent_enabled=_flag(
                "INSTAGRAM_HUMAN_AGENT_ENABLED", get("INSTAGRAM_HUMAN_AGENT_ENABLED", "false") or "false"
            ),
            send_rate_per_second=_number(
                "INSTAGRAM_SEND_RATE_PER_SECOND",
                get("INSTAGRAM_SEND_RATE_PER_SECOND", "100") or "100",
                low=0,
                high=1000,
                low_open=True,
            ),
            send_echo_wait_seconds=_number(
                "INSTAGRAM_SEND_ECHO_WAIT_SECONDS",
                get("INSTAGRAM_SEND_ECHO_WAIT_SECONDS", "20") or "20",
                low=0,
                high=3600,
            ),
            media_storage=_media_storage(get("INSTAGRAM_MEDIA_STORAGE").lower()),
            media_dir=get("INSTAGRAM_MEDIA_DIR", DEFAULT_MEDIA_DIR) or DEFAULT_MEDIA_DIR,
            media_base_url=get("INSTAGRAM_MEDIA_BASE_URL").rstrip("/"),
            media_url_ttl_seconds=int(
                _number(
                    "INSTAGRAM_MEDIA_URL_TTL_SECONDS",
                    get("INSTAGRAM_MEDIA_URL_TTL_SECONDS", "300") or "300",
                    low=10,
                    high=86_400,
                )
            ),
            metrics_token=Secret(get("INSTAGRAM_METRICS_TOKEN")),
            log_level=log_level,
        )

    @property
    def media_storage_kind(self) -> str:
        """Where media copies go: INSTAGRAM_MEDIA_STORAGE, else Supabase Storage when SUPABASE_URL is set."""
        if self.media_storage:
            return self.media_storage
        return "supabase" if self.supabase_url and self.supabase_service_role_key else "local"

    @property
    def media_url_base(self) -> str:
        """The public URL signed media URLs start with (INSTAGRAM_MEDIA_BASE_URL, else the callback's origin)."""
        if self.media_base_url:
            return self.media_base_url
        parts = urlsplit(self.oauth_redirect_uri or "http://127.0.0.1:54330")
        return f"{parts.scheme}://{parts.netloc}{MEDIA_PATH}"

    @property
    def is_development(self) -> bool:
        """Only INSTAGRAM_DM_ENV=development: dev pages are mounted and placeholder secrets tolerated."""
        return self.environment == "development"

    # ---- validation ------------------------------------------------------------------------------

    def problems(self, *groups: str) -> list[str]:
        """One readable line per problem in the named groups (all groups when none are named)."""
        checks = {
            "meta": self._meta_problems,
            "crypto": self._crypto_problems,
            "oauth": self._oauth_problems,
            "database": self._database_problems,
            "jwt": self._jwt_problems,
            "webhook": self._webhook_problems,
            "instagram_login": self._instagram_login_problems,
        }
        unknown = set(groups) - checks.keys()
        if unknown:
            raise ValueError(f"unknown settings groups: {sorted(unknown)}")
        out: list[str] = []
        for name in groups or tuple(checks):
            out.extend(checks[name]())
        return out

    def require(self, *groups: str) -> Settings:
        """Raise :class:`ConfigError` naming the first bad variable; return self otherwise."""
        problems = self.problems(*groups)
        if problems:
            raise ConfigError(problems[0])
        return self

    def _secret_problem(self, name: str, value: str) -> list[str]:
        if not value:
            return [f"{name} is not set (see .env.example)"]
        if _is_placeholder(value) and not self.is_development:
            return [f"{name} is a placeholder; set the real value"]
        return []

    def _meta_problems(self) -> list[str]:
        out: list[str] = []
        if not self.instagram_app_id:
            out.append("INSTAGRAM_APP_ID is not set (the Meta app id, see .env.example)")
        elif _is_placeholder(self.instagram_app_id):
            out.append("INSTAGRAM_APP_ID is a placeholder; set the Meta app id")
        out += self._secret_problem("INSTAGRAM_APP_SECRET", self.instagram_app_secret.reveal())
        if not _GRAPH_VERSION_RE.fullmatch(self.graph_api_version):
            out.append(f"META_GRAPH_API_VERSION must look like v25.0, got {self.graph_api_version!r}")
        for name, url in (
            ("META_GRAPH_BASE_URL", self.graph_base_url),
            ("META_OAUTH_DIALOG_BASE_URL", self.oauth_dialog_base_url),
        ):
            if not _is_http_url(url):
                out.append(f"{name} must be an absolute http(s) URL, got {url!r}")
        return out

    @property
    def instagram_login_enabled(self) -> bool:
        """Whether the Instagram-Login provider is offered: its app id and secret are both set and valid."""
        configured = bool(self.instagram_login_app_id or self.instagram_login_app_secret)
        return configured and not self._instagram_login_problems()

    def _instagram_login_problems(self) -> list[str]:
        """Optional group: nothing set is fine (the provider is simply not offered); half set is a mistake."""
        if not (self.instagram_login_app_id or self.instagram_login_app_secret):
            return []
        out: list[str] = []
        if not self.instagram_login_app_id:
            out.append(
                "INSTAGRAM_LOGIN_APP_ID is not set (the Instagram app id, needed with INSTAGRAM_LOGIN_APP_SECRET)"
            )
        elif _is_placeholder(self.instagram_login_app_id):
            out.append("INSTAGRAM_LOGIN_APP_ID is a placeholder; set the Instagram app id")
        out += self._secret_problem("INSTAGRAM_LOGIN_APP_SECRET", self.instagram_login_app_secret.reveal())
        for name, url in (
            ("INSTAGRAM_LOGIN_DIALOG_BASE_URL", self.instagram_login_dialog_base_url),
            ("INSTAGRAM_LOGIN_API_BASE_URL", self.instagram_login_api_base_url),
            ("INSTAGRAM_LOGIN_GRAPH_BASE_URL", self.instagram_login_graph_base_url),
        ):
            if not _is_http_url(url):
                out.append(f"{name} must be an absolute http(s) URL, got {url!r}")
        return out

    def _crypto_problems(self) -> list[str]:
        key = self.token_encryption_key.reveal()
        if not key:
            return ["INSTAGRAM_TOKEN_ENCRYPTION_KEY is not set (at least 32 characters)"]
        if _is_placeholder(key):
            return [
                "INSTAGRAM_TOKEN_ENCRYPTION_KEY is a placeholder; generate one with `openssl rand -base64 48`"
            ]
        if len(key) < MIN_KEY_LENGTH:
            return [f"INSTAGRAM_TOKEN_ENCRYPTION_KEY must be at least {MIN_KEY_LENGTH} characters"]
        previous = self.token_encryption_key_previous.reveal()
        if previous and len(previous) < MIN_KEY_LENGTH:
            return [f"INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS must be at least {MIN_KEY_LENGTH} characters"]
        if previous == key:
            return ["INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS must differ from INSTAGRAM_TOKEN_ENCRYPTION_KEY"]
        return []

    @property
    def previous_key(self) -> str | None:
        """The previous encryption key, when a rotation is under way (None otherwise)."""
        return self.token_encryption_key_previous.reveal() or None

    def _oauth_problems(self) -> list[str]:
        out: list[str] = []
        for name, url in (
            ("INSTAGRAM_OAUTH_REDIRECT_URI", self.oauth_redirect_uri),
            ("INSTAGRAM_RETURN_URL", self.return_url),
        ):
            if not url:
                out.append(f"{name} is not set (see .env.example)")
            elif not _is_http_url(url):
                out.append(f"{name} must be an absolute http(s) URL, got {url!r}")
        return out

    def _database_problems(self) -> list[str]:
        if self.database_url:
            # Never echo the URL: it carries the password.
            if urlsplit(self.database_url.reveal()).scheme not in {"postgres", "postgresql"}:
                return ["DATABASE_URL must be a postgresql:// URL"]
            return []
        if not self.supabase_url:
            return ["DATABASE_URL is not set (or set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)"]
        if not _is_http_url(self.supabase_url):
            return [f"SUPABASE_URL must be an absolute http(s) URL, got {self.supabase_url!r}"]
        if not self.supabase_service_role_key:
            return ["SUPABASE_SERVICE_ROLE_KEY is not set (needed with SUPABASE_URL)"]
        return self._secret_problem("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key.reveal())

    def _jwt_problems(self) -> list[str]:
        if not (self.supabase_jwks_url or self.supabase_jwt_secret):
            return ["SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL must be set to verify users' access tokens"]
        out: list[str] = []
        secret = self.supabase_jwt_secret.reveal()
        if secret:
            out += self._secret_problem("SUPABASE_JWT_SECRET", secret)
            if not out and len(secret) < MIN_KEY_LENGTH:
                out.append(f"SUPABASE_JWT_SECRET must be at least {MIN_KEY_LENGTH} characters")
        if self.supabase_jwks_url and not _is_http_url(self.supabase_jwks_url):
            out.append(f"SUPABASE_JWKS_URL must be an absolute http(s) URL, got {self.supabase_jwks_url!r}")
        return out

    def _webhook_problems(self) -> list[str]:
        return self._secret_problem("INSTAGRAM_WEBHOOK_VERIFY_TOKEN", self.webhook_verify_token.reveal())
