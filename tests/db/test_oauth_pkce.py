"""The PKCE verifier on the OAuth state row (20261202000006_instagram_oauth_pkce.sql): stored encrypted,
handed back once by consume, read with the previous key during a rotation, refused with any other."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO

KEY = "k" * 40
OTHER_KEY = "o" * 40
VERIFIER = "db-pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTU"


async def create(db: AsyncpgDatabase, *, code_verifier: str | None = VERIFIER, key: str | None = KEY) -> str:
    state_hash = uuid.uuid4().hex + uuid.uuid4().hex
    await rpc.oauth_state_create(
        db,
        state_hash=state_hash,
        user_id=DEMO_ADMIN,
        imo_id=DEMO_IMO,
        return_to="http://app.test/m",
        ttl_seconds=600,
        browser_binding_hash=None,
        code_verifier=code_verifier,
        key=key,
    )
    return state_hash


async def consume(
    db: AsyncpgDatabase, state_hash: str, *, key: str | None = KEY, previous_key: str | None = None
) -> rpc.StateConsumed:
    return await rpc.oauth_state_consume(
        db, state_hash=state_hash, browser_binding_hash=None, key=key, previous_key=previous_key
    )


async def test_verifier_is_stored_encrypted(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """The row holds the verifier as pgcrypto ciphertext with the key's fingerprint, never as plaintext."""
    state_hash = await create(db)
    row = await pg.fetchrow(
        "select s::text as dump, code_verifier_encrypted, code_verifier_key_fingerprint,"
        " instagram_private.key_fingerprint($2) as fingerprint,"
        " extensions.pgp_sym_decrypt(code_verifier_encrypted, $2) as plain"
        " from public.instagram_oauth_states s where state_hash = $1",
        state_hash,
        KEY,
    )
    assert row["plain"] == VERIFIER
    assert row["code_verifier_key_fingerprint"] == row["fingerprint"]
    assert VERIFIER not in row["dump"] and VERIFIER.encode() not in row["code_verifier_encrypted"]


async def test_consume_hands_the_verifier_back_once(db: AsyncpgDatabase) -> None:
    """An ok consume carries the decrypted verifier; the replay is used and carries none."""
    state_hash = await create(db)
    first = await consume(db, state_hash)
    assert (first.status, first.code_verifier) == ("ok", VERIFIER)
    again = await consume(db, state_hash)
    assert (again.status, again.code_verifier) == ("used", None)


async def test_state_without_verifier_consumes_without_one(
    db: AsyncpgDatabase, pg: asyncpg.Connection
) -> None:
    """A state stored without a verifier (PKCE off, or a row from before the migration) is ok with none."""
    state_hash = await create(db, code_verifier=None, key=None)
    assert await pg.fetchval(
        "select code_verifier_encrypted is null and code_verifier_key_fingerprint is null"
        " from public.instagram_oauth_states where state_hash = $1",
        state_hash,
    )
    consumed = await consume(db, state_hash, key=None)
    assert (consumed.status, consumed.code_verifier) == ("ok", None)


async def test_previous_key_reads_a_verifier_during_a_rotation(db: AsyncpgDatabase) -> None:
    """A verifier written under the previous key is read when the callback passes that key as previous."""
    state_hash = await create(db, key=OTHER_KEY)
    consumed = await consume(db, state_hash, key=KEY, previous_key=OTHER_KEY)
    assert (consumed.status, consumed.code_verifier) == ("ok", VERIFIER)


@pytest.mark.parametrize("key", [OTHER_KEY, None], ids=["another-key", "no-key"])
async def test_a_verifier_no_key_opens_is_key_mismatch(db: AsyncpgDatabase, key: str | None) -> None:
    """With neither key matching the verifier's, consume refuses with key_mismatch and spends the state."""
    state_hash = await create(db)
    refused = await consume(db, state_hash, key=key)
    assert (refused.status, refused.return_to, refused.code_verifier) == (
        "key_mismatch",
        "http://app.test/m",
        None,
    )
    assert (await consume(db, state_hash)).status == "used"


@pytest.mark.parametrize(
    "verifier",
    ["short", "x" * 129, "has space" + "x" * 40, "plus+" + "x" * 40],
    ids=["too-short", "too-long", "space", "plus"],
)
async def test_a_malformed_verifier_is_refused(
    db: AsyncpgDatabase, pg: asyncpg.Connection, verifier: str
) -> None:
    """A verifier outside RFC 7636's 43..128 unreserved characters is BadRequestError, and no state is stored."""
    with pytest.raises(errors.BadRequestError) as info:
        await create(db, code_verifier=verifier)
    assert info.value.code == "invalid_code_verifier"
    assert await pg.fetchval("select count(*) from public.instagram_oauth_states") == 0


async def test_a_verifier_needs_a_proper_key(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """A verifier without a key of at least 32 characters is BadRequestError invalid_encryption_key."""
    for key in (None, "short-key"):
        with pytest.raises(errors.BadRequestError) as info:
            await create(db, key=key)
        assert info.value.code == "invalid_encryption_key"
    assert await pg.fetchval("select count(*) from public.instagram_oauth_states") == 0


async def test_the_old_call_shape_still_works(db: AsyncpgDatabase) -> None:
    """Called as the previous release calls them (no verifier, no key), create and consume still answer."""
    state_hash = uuid.uuid4().hex + uuid.uuid4().hex
    await db.rpc(
        "instagram_oauth_state_create",
        {
            "p_state_hash": state_hash,
            "p_user_id": DEMO_ADMIN,
            "p_imo_id": DEMO_IMO,
            "p_return_to": "http://app.test/m",
            "p_ttl_seconds": 600,
            "p_browser_binding_hash": None,
        },
    )
    consumed = await db.rpc(
        "instagram_oauth_state_consume", {"p_state_hash": state_hash, "p_browser_binding_hash": None}
    )
    assert consumed["status"] == "ok" and consumed["code_verifier"] is None
