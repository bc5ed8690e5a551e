"""The fixed ids of the demo data in ``supabase/seed.sql`` (DESIGN.md "Demo data"), defined once for the
development pages, ``instagram-dm dev-token``, the benchmarks and the tests."""

from __future__ import annotations

DEMO_IMO = "00000000-0000-4000-8000-0000000000a1"  # "Demo Agency", Team plan
STARTER_IMO = "00000000-0000-4000-8000-0000000000a2"  # "Starter Agency", no instagram_messaging
DEMO_ADMIN = "00000000-0000-4000-8000-0000000000b1"  # admin@demo-agency.test
DEMO_MEMBER = "00000000-0000-4000-8000-0000000000b2"  # agent@demo-agency.test (not an admin)
STARTER_ADMIN = "00000000-0000-4000-8000-0000000000b3"  # admin@starter-agency.test
