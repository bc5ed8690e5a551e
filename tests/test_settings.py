"""instagram_dm.settings: what is read from where, what is refused, and that secrets never show."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from instagram_dm.errors import ConfigError
from instagram_dm.settings import Secret, Settings
from tests.fixtures.api import settings_env

ROOT = Path(__file__).resolve().parents[1]
DB_PASSWORD = "pg-pass-0f3c9a"
FULL = settings_env(
    "https://graph.example.test", f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/postgres"
)
# A placeholder long enough to pass every length rule, so only the placeholder rule can refuse it.
PLACEHOLDER = "changeme-changeme-changeme-changeme"
# The variables each group needs, and the group that checks it.
GROUP_OF = {
    "INSTAGRAM_APP_ID": "meta",
    "INSTAGRAM_APP_SECRET": "meta",
    "INSTAGRAM_TOKEN_ENCRYPTION_KEY": "crypto",
    "INSTAGRAM_OAUTH_REDIRECT_URI": "oauth",
    "INSTAGRAM_RETURN_URL": "oauth",
    "DATABASE_URL": "database",
    "SUPABASE_JWT_SECRET": "jwt",
    "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "webhook",
}
GROUPS = ("meta", "crypto", "oauth", "database", "jwt", "webhook")
FLAGS = [("INSTAGRAM_OAUTH_BIND_BROWSER", "oauth_bind_browser"), ("INSTAGRAM_OAUTH_PKCE", "oauth_pkce")]


def load(env_file: str | Path | None = None, **overrides: str) -> Settings:
    return Settings.from_environ(FULL | overrides, env_file=env_file)


def without(*names: str, **overrides: str) -> Settings:
    env = {k: v for k, v in (FULL | overrides).items() if k not in names}
    return Settings.from_environ(env, env_file=None)


def config_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_environ(env, env_file=None)
    return info.value.message


# ---- a complete configuration --------------------------------------------------------------------


def test_full_configuration_has_no_problems() -> None:
    """With every variable set to a real value, no group reports a problem and require() returns self."""
    settings = load()
    assert settings.problems() == []
    assert settings.require(*GROUPS) is settings


def test_values_are_read_and_stripped() -> None:
    """Each variable lands in its field, surrounding whitespace removed."""
    settings = load(
        INSTAGRAM_APP_ID="  1234567890 \n", INSTAGRAM_RETURN_URL=" https://crm.example.com/messages "
    )
    assert settings.instagram_app_id == "1234567890"
    assert settings.return_url == "https://crm.example.com/messages"
    assert settings.instagram_app_secret.reveal() == FULL["INSTAGRAM_APP_SECRET"]
    assert settings.database_url.reveal() == FULL["DATABASE_URL"]


def test_base_urls_lose_their_trailing_slash() -> None:
    """META_GRAPH_BASE_URL, META_OAUTH_DIALOG_BASE_URL and SUPABASE_URL are stored without a trailing slash."""
    settings = load(
        META_GRAPH_BASE_URL="https://graph.example.test/",
        META_OAUTH_DIALOG_BASE_URL="https://dialog.example.test//",
        SUPABASE_URL="https://abc.supabase.co/",
    )
    assert settings.graph_base_url == "https://graph.example.test"
    assert settings.oauth_dialog_base_url == "https://dialog.example.test"
    assert settings.supabase_url == "https://abc.supabase.co"


# ---- defaults: the README's configuration table ---------------------------------------------------


def readme_defaults() -> dict[str, str]:
    """`VARIABLE` → default, from the rows of README.md's configuration table that give one in backticks."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3:
            continue
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        defaults = re.findall(r"`([^`]+)`", cells[2])
        if names and len(names) == len(defaults):
            out.update(zip(names, defaults, strict=True))
    return out


def test_readme_table_lists_the_defaults_settings_reads() -> None:
    """The README's table gives a default for exactly the optional variables Settings reads (plus the
    database scripts' two)."""
    assert set(readme_defaults()) == {
        "META_GRAPH_API_VERSION",
        "META_GRAPH_BASE_URL",
        "META_OAUTH_DIALOG_BASE_URL",
        "INSTAGRAM_LOGIN_DIALOG_BASE_URL",
        "INSTAGRAM_LOGIN_API_BASE_URL",
        "INSTAGRAM_LOGIN_GRAPH_BASE_URL",
        "INSTAGRAM_DM_ENV",
        "INSTAGRAM_OAUTH_BIND_BROWSER",
        "INSTAGRAM_OAUTH_PKCE",
        "INSTAGRAM_WORKER_CONCURRENCY",
        "INSTAGRAM_DB_TIMEOUT_SECONDS",
        "INSTAGRAM_HUMAN_AGENT_ENABLED",
        "INSTAGRAM_SEND_RATE_PER_SECOND",
        "INSTAGRAM_SEND_ECHO_WAIT_SECONDS",
        "INSTAGRAM_MEDIA_DIR",
        "INSTAGRAM_MEDIA_URL_TTL_SECONDS",
        "LOG_LEVEL",
        "INSTAGRAM_DM_DB_PORT",
        "INSTAGRAM_DM_DB_DIR",
    }


@pytest.mark.parametrize(
    ("name", "default"),
    sorted((k, v) for k, v in readme_defaults().items() if not k.startswith("INSTAGRAM_DM_DB_")),
)
def test_unset_variable_means_the_readme_default(name: str, default: str) -> None:
    """An unset optional variable gives the same settings as setting it to the README's default."""
    assert Settings.from_environ({}, env_file=None) == Settings.from_environ({name: default}, env_file=None)


def test_defaults_when_nothing_is_set() -> None:
    """Nothing set: production, Graph v25.0 at Meta's origins, browser binding and PKCE on, 20 jobs, INFO."""
    settings = Settings.from_environ({}, env_file=None)
    assert (
        settings.environment,
        settings.is_development,
        settings.graph_api_version,
        settings.graph_base_url,
        settings.oauth_dialog_base_url,
        settings.oauth_bind_browser,
        settings.oauth_pkce,
        settings.worker_concurrency,
        settings.log_level,
    ) == (
        "production",
        False,
        "v25.0",
        "https://graph.facebook.com",
        "https://www.facebook.com",
        True,
        True,
        20,
        "INFO",
    )


def test_secrets_have_no_defaults() -> None:
    """Nothing set: every secret is empty, so every group reports its variable as not set."""
    problems = Settings.from_environ({}, env_file=None).problems()
    for name in GROUP_OF:
        if name != "SUPABASE_JWT_SECRET":
            assert any(p.startswith(f"{name} is not set") for p in problems), (name, problems)
    assert any("SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL must be set" in p for p in problems)


# ---- required variables, per group ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "group"), sorted(GROUP_OF.items()))
def test_missing_variable_is_named_by_its_group(name: str, group: str) -> None:
    """Without the variable, require(its group) raises one line that names it."""
    with pytest.raises(ConfigError) as info:
        without(name).require(group)
    assert name in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(("name", "group"), sorted(GROUP_OF.items()))
def test_other_groups_do_not_need_the_variable(name: str, group: str) -> None:
    """A process that does not ask for a variable's group starts without it."""
    others = [g for g in GROUPS if g != group]
    assert without(name).problems(*others) == []


def test_require_raises_the_first_problem_only() -> None:
    """With several problems, require() names the first one; problems() lists them all."""
    settings = without("INSTAGRAM_APP_ID", "INSTAGRAM_APP_SECRET")
    assert len(settings.problems("meta")) == 2
    with pytest.raises(ConfigError, match=r"^INSTAGRAM_APP_ID is not set"):
        settings.require("meta")


def test_unknown_group_is_a_programming_error() -> None:
    """Asking for a group that does not exist is a ValueError, not a configuration problem."""
    with pytest.raises(ValueError, match="unknown settings groups"):
        load().problems("meta", "nope")


def test_supabase_rest_replaces_database_url() -> None:
    """SUPABASE_URL with SUPABASE_SERVICE_ROLE_KEY satisfies the database group without DATABASE_URL."""
    settings = without(
        "DATABASE_URL", SUPABASE_URL="https://abc.supabase.co", SUPABASE_SERVICE_ROLE_KEY="k" * 40
    )
    assert settings.problems("database") == []


def test_supabase_url_without_service_role_key_names_the_key() -> None:
    """SUPABASE_URL alone is refused with a line naming SUPABASE_SERVICE_ROLE_KEY."""
    settings = without("DATABASE_URL", SUPABASE_URL="https://abc.supabase.co")
    assert settings.problems("database") == [
        "SUPABASE_SERVICE_ROLE_KEY is not set (needed with SUPABASE_URL)"
    ]


def test_jwks_url_replaces_the_jwt_secret() -> None:
    """SUPABASE_JWKS_URL alone satisfies the jwt group."""
    settings = without(
        "SUPABASE_JWT_SECRET", SUPABASE_JWKS_URL="https://abc.supabase.co/auth/v1/.well-known/jwks.json"
    )
    assert settings.problems("jwt") == []


def test_short_jwt_secret_is_refused() -> None:
    """An HS256 secret shorter than 32 characters is refused by the jwt group, naming SUPABASE_JWT_SECRET."""
    assert load(SUPABASE_JWT_SECRET="s" * 31).problems("jwt") == [
        "SUPABASE_JWT_SECRET must be at least 32 characters"
    ]
    assert load(SUPABASE_JWT_SECRET="s" * 32).problems("jwt") == []


# ---- placeholders ---------------------------------------------------------------------------------

SECRETS_TOLERATED_IN_DEVELOPMENT = {
    "INSTAGRAM_APP_SECRET": "meta",
    "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "webhook",
    "SUPABASE_JWT_SECRET": "jwt",
    "SUPABASE_SERVICE_ROLE_KEY": "database",
}


def with_secret(name: str, value: str, environment: str) -> Settings:
    if name == "SUPABASE_SERVICE_ROLE_KEY":  # only read when Supabase REST is the database transport
        return without(
            "DATABASE_URL",
            SUPABASE_URL="https://abc.supabase.co",
            **{name: value, "INSTAGRAM_DM_ENV": environment},
        )
    return load(**{name: value, "INSTAGRAM_DM_ENV": environment})


@pytest.mark.parametrize(("name", "group"), sorted(SECRETS_TOLERATED_IN_DEVELOPMENT.items()))
def test_placeholder_secret_is_refused_in_production(name: str, group: str) -> None:
    """In production a placeholder secret is refused with a line naming it, without echoing the value."""
    problems = with_secret(name, PLACEHOLDER, "production").problems(group)
    assert problems == [f"{name} is a placeholder; set the real value"]


@pytest.mark.parametrize(("name", "group"), sorted(SECRETS_TOLERATED_IN_DEVELOPMENT.items()))
def test_placeholder_secret_is_tolerated_in_development(name: str, group: str) -> None:
    """With INSTAGRAM_DM_ENV=development the same placeholder secret passes."""
    assert with_secret(name, PLACEHOLDER, "development").problems(group) == []


@pytest.mark.parametrize(
    "value",
    [
        "<meta-app-secret>",
        "changeme",
        "CHANGETHIS",
        "change-me",
        "placeholder",
        "todo",
        "xxx",
        "secret",
        "your-app-secret",
        "your_app_secret",
        "prefix-changeme-suffix",
        " <padded> ",
    ],
)
def test_placeholder_shapes(value: str) -> None:
    """Angle-bracketed values, your-/your_ prefixes, anything containing changeme and the listed words
    are placeholders, in any case."""
    assert load(INSTAGRAM_APP_SECRET=value).problems("meta") == [
        "INSTAGRAM_APP_SECRET is a placeholder; set the real value"
    ]


def test_real_secret_that_mentions_a_placeholder_word_is_accepted() -> None:
    """A value that merely contains 'secret' or 'todo' is not a placeholder."""
    assert load(INSTAGRAM_APP_SECRET="0a1b-secret-todo-9f").problems("meta") == []


@pytest.mark.parametrize("environment", ["production", "development"])
def test_placeholder_app_id_is_refused_everywhere(environment: str) -> None:
    """A placeholder INSTAGRAM_APP_ID is refused even in development: the sandbox has a real-looking one."""
    settings = load(INSTAGRAM_APP_ID="<meta-app-id>", INSTAGRAM_DM_ENV=environment)
    assert settings.problems("meta") == ["INSTAGRAM_APP_ID is a placeholder; set the Meta app id"]


@pytest.mark.parametrize("environment", ["production", "development"])
def test_placeholder_encryption_key_is_refused_everywhere(environment: str) -> None:
    """A placeholder INSTAGRAM_TOKEN_ENCRYPTION_KEY is refused in development too, with how to make one."""
    problems = load(INSTAGRAM_TOKEN_ENCRYPTION_KEY=PLACEHOLDER, INSTAGRAM_DM_ENV=environment).problems(
        "crypto"
    )
    assert len(problems) == 1
    assert problems[0].startswith("INSTAGRAM_TOKEN_ENCRYPTION_KEY is a placeholder")
    assert "openssl rand" in problems[0]


# ---- the encryption key's length ------------------------------------------------------------------


def test_encryption_key_needs_32_characters() -> None:
    """A 31-character key is refused naming the minimum; 32 characters are enough."""
    assert load(INSTAGRAM_TOKEN_ENCRYPTION_KEY="k" * 31).problems("crypto") == [
        "INSTAGRAM_TOKEN_ENCRYPTION_KEY must be at least 32 characters"
    ]
    assert load(INSTAGRAM_TOKEN_ENCRYPTION_KEY="k" * 32).problems("crypto") == []


def test_encryption_key_length_counts_after_stripping() -> None:
    """Whitespace around the key does not count towards its length."""
    key = "  " + "k" * 31 + "  "
    assert load(INSTAGRAM_TOKEN_ENCRYPTION_KEY=key).problems("crypto") != []


# ---- URLs and formats -----------------------------------------------------------------------------

URL_GROUPS = {
    "META_GRAPH_BASE_URL": "meta",
    "META_OAUTH_DIALOG_BASE_URL": "meta",
    "INSTAGRAM_OAUTH_REDIRECT_URI": "oauth",
    "INSTAGRAM_RETURN_URL": "oauth",
    "SUPABASE_JWKS_URL": "jwt",
}
BAD_URLS = [
    "ftp://graph.example.test",
    "graph.example.test",
    "https://",
    "https:///path",
    "/relative",
    "javascript:x",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(("name", "group"), sorted(URL_GROUPS.items()))
def test_url_must_be_absolute_http(name: str, group: str, url: str) -> None:
    """Each URL variable must be an absolute http(s) URL with a host; the line names it and the value."""
    problems = load(**{name: url}).problems(group)
    assert len(problems) == 1
    assert problems[0].startswith(f"{name} must be an absolute http(s) URL, got ")


@pytest.mark.parametrize("url", BAD_URLS)
def test_supabase_url_must_be_absolute_http(url: str) -> None:
    """SUPABASE_URL, when it is the database transport, must be an absolute http(s) URL."""
    settings = without("DATABASE_URL", SUPABASE_URL=url, SUPABASE_SERVICE_ROLE_KEY="k" * 40)
    problems = settings.problems("database")
    assert len(problems) == 1
    assert problems[0].startswith("SUPABASE_URL must be an absolute http(s) URL, got ")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:54331", "https://graph.facebook.com", "http://localhost/x"]
)
def test_http_urls_with_a_host_are_accepted(url: str) -> None:
    """http and https URLs with a host (IPs and ports included) pass."""
    assert load(META_GRAPH_BASE_URL=url, INSTAGRAM_RETURN_URL=url).problems("meta", "oauth") == []


@pytest.mark.parametrize(
    "url",
    ["mysql://u:secret-pass@db/x", f"https://postgres:{DB_PASSWORD}@db.example/x", "127.0.0.1:5432/postgres"],
)
def test_database_url_must_be_postgres_and_is_never_echoed(url: str) -> None:
    """DATABASE_URL must use postgres(ql)://; the refusal does not repeat the URL (it holds a password)."""
    problems = load(DATABASE_URL=url).problems("database")
    assert problems == ["DATABASE_URL must be a postgresql:// URL"]


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_database_url_accepts_both_postgres_schemes(scheme: str) -> None:
    """postgres:// and postgresql:// are both accepted."""
    assert load(DATABASE_URL=f"{scheme}://u:p@127.0.0.1:5432/db").problems("database") == []


@pytest.mark.parametrize("version", ["25.0", "v25", "vlatest", "v25.0.1", "V25.0"])
def test_graph_version_must_look_like_v25_0(version: str) -> None:
    """META_GRAPH_API_VERSION must be v<major>.<minor>."""
    assert load(META_GRAPH_API_VERSION=version).problems("meta") == [
        f"META_GRAPH_API_VERSION must look like v25.0, got {version!r}"
    ]


def test_graph_version_is_read() -> None:
    """A well-formed META_GRAPH_API_VERSION is used as given."""
    settings = load(META_GRAPH_API_VERSION="v26.1")
    assert settings.graph_api_version == "v26.1"
    assert settings.problems("meta") == []


# ---- INSTAGRAM_DM_ENV -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["dev", "local", "test", "Development", "DEVELOPMENT", "prod", "staging"])
def test_only_documented_environments_are_accepted(value: str) -> None:
    """Any INSTAGRAM_DM_ENV other than production/development is one line naming the variable and both values."""
    message = config_error(FULL | {"INSTAGRAM_DM_ENV": value})
    assert message == f"INSTAGRAM_DM_ENV must be 'production' or 'development', got {value!r}"


@pytest.mark.parametrize(
    ("value", "development"), [("development", True), ("production", False), ("", False)]
)
def test_environment_decides_development(value: str, development: bool) -> None:
    """development (and only it) makes is_development true; empty means production."""
    settings = load(INSTAGRAM_DM_ENV=value)
    assert settings.is_development is development
    assert settings.environment == ("development" if development else "production")


def test_settings_built_in_code_refuse_an_unknown_environment() -> None:
    """Settings(environment=...) outside the two values is refused too, not silently production."""
    with pytest.raises(ConfigError, match="INSTAGRAM_DM_ENV"):
        Settings(environment="test")


# ---- process options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
@pytest.mark.parametrize(("name", "attribute"), FLAGS)
def test_boolean_flags(name: str, attribute: str, raw: str, expected: bool) -> None:
    """INSTAGRAM_OAUTH_BIND_BROWSER and INSTAGRAM_OAUTH_PKCE read the usual spellings of true and false."""
    assert getattr(load(**{name: raw}), attribute) is expected


@pytest.mark.parametrize("name", [name for name, _ in FLAGS])
@pytest.mark.parametrize("raw", ["flase", "disabled", "2"])
def test_boolean_flags_refuse_anything_else(name: str, raw: str) -> None:
    """A misspelt boolean flag is refused rather than read as true."""
    assert config_error(FULL | {name: raw}) == f"{name} must be true or false, got {raw!r}"


def test_worker_concurrency_is_read() -> None:
    """INSTAGRAM_WORKER_CONCURRENCY is read as an integer."""
    assert load(INSTAGRAM_WORKER_CONCURRENCY="7").worker_concurrency == 7


@pytest.mark.parametrize("raw", ["many", "2.5", "0", "-3"])
def test_worker_concurrency_must_be_positive_integer(raw: str) -> None:
    """A non-integer or non-positive INSTAGRAM_WORKER_CONCURRENCY is one line naming it."""
    assert config_error(FULL | {"INSTAGRAM_WORKER_CONCURRENCY": raw}) == (
        f"INSTAGRAM_WORKER_CONCURRENCY must be a whole number of at least 1, got {raw!r}"
    )


def test_log_level_is_upper_cased() -> None:
    """LOG_LEVEL is case-insensitive."""
    assert load(LOG_LEVEL="debug").log_level == "DEBUG"


def test_unknown_log_level_is_refused() -> None:
    """A LOG_LEVEL logging does not know is one line listing the levels (not a traceback at configure())."""
    assert config_error(FULL | {"LOG_LEVEL": "verbose"}) == (
        "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'VERBOSE'"
    )


# ---- environment and .env -------------------------------------------------------------------------


def write_env(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_env_file_fills_in_what_the_environment_lacks(tmp_path: Path) -> None:
    """A variable only in the .env file is read from it."""
    env_file = write_env(tmp_path, INSTAGRAM_APP_ID="from-file-123")
    environ = {k: v for k, v in FULL.items() if k != "INSTAGRAM_APP_ID"}
    assert Settings.from_environ(environ, env_file=env_file).instagram_app_id == "from-file-123"


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    """A variable in both the environment and the .env file takes the environment's value."""
    env_file = write_env(tmp_path, INSTAGRAM_APP_ID="from-file-123", LOG_LEVEL="DEBUG")
    settings = load(env_file=env_file, INSTAGRAM_APP_ID="from-env-456")
    assert settings.instagram_app_id == "from-env-456"
    assert settings.log_level == "DEBUG"


def test_empty_environment_variable_still_wins(tmp_path: Path) -> None:
    """A variable set to empty in the environment overrides the file (as starlette's Config does)."""
    env_file = write_env(tmp_path, INSTAGRAM_APP_ID="from-file-123")
    assert load(env_file=env_file, INSTAGRAM_APP_ID="").instagram_app_id == ""


def test_env_file_none_or_missing_is_ignored(tmp_path: Path) -> None:
    """env_file=None, or a path that does not exist, reads the environment only."""
    settings = Settings.from_environ({"INSTAGRAM_APP_ID": "1"}, env_file=tmp_path / "absent.env")
    assert settings.instagram_app_id == "1"
    assert Settings.from_environ({}, env_file=None).instagram_app_id == ""


def test_env_file_values_are_validated_like_the_environment(tmp_path: Path) -> None:
    """A bad value in the .env file is refused just like one from the environment."""
    env_file = write_env(tmp_path, INSTAGRAM_DM_ENV="dev")
    with pytest.raises(ConfigError, match="INSTAGRAM_DM_ENV"):
        Settings.from_environ({}, env_file=env_file)


def test_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_environ reads os.environ."""
    monkeypatch.setenv("INSTAGRAM_APP_ID", "from-os-environ")
    assert Settings.from_environ(env_file=None).instagram_app_id == "from-os-environ"


# ---- secrets never show ---------------------------------------------------------------------------

SECRET_FIELDS = [f.name for f in fields(Settings) if f.type == "Secret"]


def secret_values(settings: Settings) -> list[str]:
    return [getattr(settings, name).reveal() for name in SECRET_FIELDS]


def test_every_secret_variable_is_a_secret_field() -> None:
    """Every field named like a secret (secret, key, token, password) and DATABASE_URL is a Secret, the
    known ones included."""
    secretish = {
        f.name
        for f in fields(Settings)
        if re.search(r"secret|key|token|password", f.name) or f.name == "database_url"
    }
    assert secretish <= set(SECRET_FIELDS)
    assert {
        "database_url",
        "instagram_app_secret",
        "supabase_jwt_secret",
        "supabase_service_role_key",
        "token_encryption_key",
        "webhook_verify_token",
    } <= set(SECRET_FIELDS)


def test_repr_and_str_of_settings_show_no_secret() -> None:
    """repr() and str() of Settings mask every secret, the database password included."""
    settings = load(SUPABASE_SERVICE_ROLE_KEY="service-role-key-9d8e7f")
    values = [value for value in secret_values(settings) if value]
    assert len(values) >= 6 and DB_PASSWORD in settings.database_url.reveal()
    for text in (repr(settings), str(settings), f"{settings}"):
        for value in [*values, DB_PASSWORD]:
            assert value not in text
        assert "Secret('**********')" in text


def test_problems_never_echo_a_secret() -> None:
    """No problem line contains the value of a secret that was refused."""
    settings = load(
        INSTAGRAM_APP_SECRET="<secret-app-value-1>",
        INSTAGRAM_TOKEN_ENCRYPTION_KEY="short-key-value-2",
        INSTAGRAM_WEBHOOK_VERIFY_TOKEN="<secret-verify-value-3>",
        SUPABASE_JWT_SECRET="short-jwt-value-4",
        DATABASE_URL=f"mysql://root:{DB_PASSWORD}@db/x",
    )
    problems = settings.problems()
    assert len(problems) == 5
    for value in [
        "secret-app-value-1",
        "short-key-value-2",
        "secret-verify-value-3",
        "short-jwt-value-4",
        DB_PASSWORD,
    ]:
        assert all(value not in line for line in problems)


@given(value=st.text(min_size=1))
def test_secret_never_shows_its_value(value: str) -> None:
    """Whatever a Secret holds, repr(), str() and format() show only the mask, and reveal() gives it back."""
    shown = repr(Secret(value))
    assume(value not in "Secret('**********')")
    assert shown == str(Secret(value)) == f"{Secret(value)}" == "Secret('**********')"
    assert Secret(value).reveal() == value


def test_secret_compares_and_tests_by_value() -> None:
    """Secrets are equal when their values are; an empty Secret is falsy."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))
    assert not Secret("")
    assert Secret("x")


def test_env_example_as_copied_is_refused_naming_each_placeholder() -> None:
    """.env.example copied unchanged to .env does not start in production: every placeholder is named."""
    problems = Settings.from_environ({}, env_file=ROOT / ".env.example").problems()
    named = {line.split(" ", 1)[0] for line in problems}
    assert named == {
        "INSTAGRAM_APP_ID",
        "INSTAGRAM_APP_SECRET",
        "INSTAGRAM_TOKEN_ENCRYPTION_KEY",
        "SUPABASE_JWT_SECRET",
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN",
    }
    assert all("placeholder" in line for line in problems)


# ---- the database timeout ------------------------------------------------------------------------


def test_db_timeout_defaults_to_5_seconds_and_is_read() -> None:
    """INSTAGRAM_DB_TIMEOUT_SECONDS: 5 when unset, fractions of a second accepted."""
    assert Settings.from_environ({}, env_file=None).db_timeout_seconds == 5.0
    assert (
        Settings.from_environ({"INSTAGRAM_DB_TIMEOUT_SECONDS": "0.5"}, env_file=None).db_timeout_seconds
        == 0.5
    )


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf"])
def test_db_timeout_must_be_a_positive_number(raw: str) -> None:
    """A timeout of zero, below zero, not a number or infinite stops start-up with one line naming it."""
    with pytest.raises(ConfigError, match=r"^INSTAGRAM_DB_TIMEOUT_SECONDS must be"):
        Settings.from_environ({"INSTAGRAM_DB_TIMEOUT_SECONDS": raw}, env_file=None)


def test_sending_settings_default_and_refuse_bad_values_in_one_line() -> None:
    """The sending settings: false / 100 / 20 when unset; a rate of 0 or a wait that is not a number is one line."""
    settings = Settings.from_environ({}, env_file=None)
    assert (settings.human_agent_enabled, settings.send_rate_per_second, settings.send_echo_wait_seconds) == (
        False,
        100.0,
        20.0,
    )
    assert config_error(FULL | {"INSTAGRAM_SEND_RATE_PER_SECOND": "0"}) == (
        "INSTAGRAM_SEND_RATE_PER_SECOND must be a number above 0 and at most 1000, got '0'"
    )
    assert config_error(FULL | {"INSTAGRAM_SEND_ECHO_WAIT_SECONDS": "soon"}).startswith(
        "INSTAGRAM_SEND_ECHO_WAIT_SECONDS must be a number at least 0"
    )
    assert config_error(FULL | {"INSTAGRAM_HUMAN_AGENT_ENABLED": "maybe"}) == (
        "INSTAGRAM_HUMAN_AGENT_ENABLED must be true or false, got 'maybe'"
    )


# ---- Instagram Login (optional group) ---------------------------------------------------------------


def test_instagram_login_is_off_and_fine_when_unset() -> None:
    """Neither INSTAGRAM_LOGIN_APP_ID nor _SECRET: no problem, and the provider is not offered."""
    settings = load()
    assert settings.problems("instagram_login") == [] and settings.instagram_login_enabled is False


def test_instagram_login_half_set_is_refused_naming_the_missing_variable() -> None:
    """An id without a secret (or the reverse) is one line naming what is missing; both set: offered."""
    assert load(INSTAGRAM_LOGIN_APP_ID="123").problems("instagram_login") == [
        "INSTAGRAM_LOGIN_APP_SECRET is not set (see .env.example)"
    ]
    assert (
        load(INSTAGRAM_LOGIN_APP_SECRET="s3cr3t-value")
        .problems("instagram_login")[0]
        .startswith("INSTAGRAM_LOGIN_APP_ID is not set")
    )
    both = load(INSTAGRAM_LOGIN_APP_ID="123", INSTAGRAM_LOGIN_APP_SECRET="s3cr3t-value")
    assert both.problems("instagram_login") == [] and both.instagram_login_enabled is True
    assert "s3cr3t-value" not in repr(both)


def test_instagram_login_origins_must_be_absolute_http() -> None:
    """A configured Instagram Login with a relative graph origin is refused naming the variable."""
    settings = load(
        INSTAGRAM_LOGIN_APP_ID="123",
        INSTAGRAM_LOGIN_APP_SECRET="s3cr3t-value",
        INSTAGRAM_LOGIN_GRAPH_BASE_URL="/relative",
    )
    assert settings.problems("instagram_login") == [
        "INSTAGRAM_LOGIN_GRAPH_BASE_URL must be an absolute http(s) URL, got '/relative'"
    ]
    assert settings.instagram_login_enabled is False
