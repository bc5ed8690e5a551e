"""docs/rpc.md: generated from the migrated database (function comments + pg_catalog) and never stale."""

from __future__ import annotations

from pathlib import Path

from cli.rpc_docs import NOT_STATED, parse_comment, render
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from tests.db.test_rls import APP_FACING_FUNCTIONS
from tests.test_cli import cli, good_env

__all__ = ["good_env"]  # the fixture, used here by name

DOCS = Path(__file__).resolve().parents[1] / "docs" / "rpc.md"


async def test_docs_rpc_md_is_what_the_database_says(db: AsyncpgDatabase) -> None:
    """docs/rpc.md equals what `instagram-dm rpc-docs` renders from the migrated database (else: `make rpc-docs`)."""
    assert DOCS.read_text() == render(await rpc.rpc_catalogue(db)), (
        "docs/rpc.md is stale: run `make rpc-docs`"
    )


async def test_catalogue_is_exactly_the_app_facing_functions(db: AsyncpgDatabase) -> None:
    """The catalogue lists every function granted to authenticated, each once, and nothing else."""
    names = [f.name for f in await rpc.rpc_catalogue(db)]
    assert sorted(names) == sorted(APP_FACING_FUNCTIONS)


async def test_every_app_facing_function_states_caller_result_and_refusals(db: AsyncpgDatabase) -> None:
    """Each app-facing function's comment says what it does, who may call it, what it returns and what it
    refuses (or that it refuses nothing)."""
    unstated = {}
    for function in await rpc.rpc_catalogue(db):
        d = parse_comment(function.comment)
        missing = [part for part, v in (("summary", d.summary), ("Caller", d.caller), ("Returns", d.returns),
                                        ("Refuses", d.refuses or d.refuses_text)) if not v]  # fmt: skip
        if missing:
            unstated[function.name] = missing
    assert unstated == {}


def test_an_unstructured_comment_is_all_description() -> None:
    """A comment without the named lines is the description, and the other parts render as not stated."""
    d = parse_comment("Does a thing: quickly.\nSecond line.")
    assert (d.summary, d.caller, d.returns, d.refuses, d.refuses_text) == (
        "Does a thing: quickly. Second line.", None, None, (), None)  # fmt: skip
    function = rpc.RpcFunction(name="f", signature="f()", arguments=(), returns="jsonb", security="invoker",
                               volatility="stable", granted_to=("authenticated",), comment=None)  # fmt: skip
    assert render([function]).count(NOT_STATED) == 4


def test_refusals_are_split_into_codes_and_when() -> None:
    """`Refuses: a: when a; b, c: as for x` gives each code with its condition; `none (...)` lists none."""
    d = parse_comment("X.\nRefuses: a: when a; b, c: as for x")
    assert d.refuses == (("a", "when a"), ("b, c", "as for x"))
    assert parse_comment("X.\nRefuses: none ([] for others)").refuses_text == "none ([] for others)"


def test_check_mode_refuses_a_stale_file_and_write_mode_fixes_it(
    good_env: dict[str, str], tmp_path: Path
) -> None:
    """`rpc-docs --check` on a stale file is one line and exit 1; `rpc-docs` writes it; `--check` is then 0."""
    target = tmp_path / "rpc.md"
    target.write_text("stale\n")
    stale = cli("rpc-docs", "--check", "--output", str(target), env=good_env)
    assert (stale.returncode, stale.stderr.strip()) == (
        1,
        f"instagram-dm rpc-docs: {target} is stale; run `make rpc-docs`",
    )
    assert cli("rpc-docs", "--output", str(target), env=good_env).returncode == 0
    assert target.read_text() == DOCS.read_text()
    assert cli("rpc-docs", "--check", "--output", str(target), env=good_env).returncode == 0
