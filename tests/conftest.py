"""Test-wide set-up: a scrubbed environment, then the fixtures under tests/fixtures/.

`make test` brings the embedded database up and migrates it before pytest starts; the database
fixtures only connect to it (INSTAGRAM_DM_DB_PORT or TEST_DATABASE_URL point them elsewhere).
"""

from __future__ import annotations

import os

# The developer's shell must not leak settings into the tests.
# INSTAGRAM_DM_DB_PORT / INSTAGRAM_DM_DB_DIR stay: they say where the test database runs.
for _name in list(os.environ):
    if _name in {"INSTAGRAM_DM_DB_PORT", "INSTAGRAM_DM_DB_DIR"}:
        continue
    if _name.startswith(("INSTAGRAM_", "META_", "SUPABASE_")) or _name == "DATABASE_URL":
        del os.environ[_name]

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.sandbox",
    "tests.fixtures.api",
    "tests.fixtures.instagram_login",
]
