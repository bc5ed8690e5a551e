"""Test-wide set-up: a scrubbed environment, then the fixtures under tests/fixtures/.

`make test` brings the embedded database up and migrates it before pytest starts; the database
fixtures only connect to it (TEST_DATABASE_URL overrides the embedded default).
"""

from __future__ import annotations

import os

# The developer's shell must not leak settings into the tests.
for _name in list(os.environ):
    if _name.startswith(("INSTAGRAM_", "META_", "SUPABASE_")) or _name in {
        "DATABASE_URL",
        "INSTAGRAM_DM_ENV",
    }:
        del os.environ[_name]

pytest_plugins = ["tests.fixtures.database", "tests.fixtures.sandbox", "tests.fixtures.api"]
