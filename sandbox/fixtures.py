"""Default fixture users (fixed, documented ids) and the JSON spec `POST /_sandbox/users` accepts.

| user id | name | Pages | Instagram |
|---|---|---|---|
| 10000000000001 | Alice Agent | 1 (101000000000101) | 17841400000000101 `alice.recruits` |
| 10000000000002 | Bob Broker | 2 (101000000000201, -202) | one each: `bob.life`, `bob.health` |
| 10000000000003 | Carol NoIG | 1 (101000000000301) | none |
| 10000000000004 | Dave NoPages | 0 | - |
| 10000000000005 | Erin Many | 30 (101000000000501 .. -530) | one each: `erin.page01` .. |
| 10000000000006 | Frank Declined | 1 (101000000000601) | `frank.ig`; declined instagram_manage_messages |
| 10000000000007 | Grace Sparse | 60, of which 26..50 hidden: pages of 25, 0 and 10 | one each |

Instagram users (IGSIDs) who can be looked up: 6100000000000001 `prospect.one`,
6100000000000002 `prospect.two`, 6100000000000003 `prospect.three`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.state import State, UserRec

ALICE = "10000000000001"
BOB = "10000000000002"
CAROL = "10000000000003"
DAVE = "10000000000004"
ERIN = "10000000000005"
FRANK = "10000000000006"
GRACE = "10000000000007"
IG_USERS = ("6100000000000001", "6100000000000002", "6100000000000003")


def page_id(user_index: int, n: int) -> str:
    return f"1010000000{user_index:03d}{n:02d}"


def ig_id(user_index: int, n: int) -> str:
    return f"178414000000{user_index:03d}{n:02d}"


def _simple(
    state: State,
    index: int,
    name: str,
    pages: list[tuple[str, str | None]],
    *,
    declined: frozenset[str] = frozenset(),
    hidden: range | None = None,
) -> None:
    user = state.add_user(f"1000000000000{index}", name, declined_scopes=declined)
    for n, (page_name, username) in enumerate(pages, start=1):
        page = state.add_page(user, page_id(index, n), page_name, hidden=hidden is not None and n in hidden)
        if username is not None:
            state.link_instagram(page, ig_id(index, n), username)


def load_defaults(state: State) -> None:
    """The default world after `reset`."""
    _simple(state, 1, "Alice Agent", [("Alice Insurance", "alice.recruits")])
    _simple(state, 2, "Bob Broker", [("Bob Life", "bob.life"), ("Bob Health", "bob.health")])
    _simple(state, 3, "Carol NoIG", [("Carol Annuities", None)])
    _simple(state, 4, "Dave NoPages", [])
    _simple(state, 5, "Erin Many", [(f"Erin Page {n:02d}", f"erin.page{n:02d}") for n in range(1, 31)])
    _simple(
        state,
        6,
        "Frank Declined",
        [("Frank Financial", "frank.ig")],
        declined=frozenset({"instagram_manage_messages"}),
    )
    _simple(
        state,
        7,
        "Grace Sparse",
        [(f"Grace Page {n:02d}", f"grace.page{n:02d}") for n in range(1, 61)],
        hidden=range(26, 51),
    )
    for n, igsid in enumerate(IG_USERS, start=1):
        word = ("one", "two", "three")[n - 1]
        state.add_instagram_user(igsid, f"prospect.{word}", f"Prospect {word.title()}")


def parse_time(value: object) -> int:
    """Epoch seconds from an int/float or an ISO 8601 string."""
    if isinstance(value, bool):
        raise TypeError("a time must be epoch seconds or ISO 8601")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp())
    raise TypeError("a time must be epoch seconds or ISO 8601")


def create_user(state: State, spec: dict[str, Any]) -> dict[str, Any]:
    """Create one user from a JSON spec; return its ids.

    ``{"id"?, "name"?, "declined_scopes"?: [..], "data_access_expires_at"?: iso|epoch,
      "pages"?: [{"id"?, "name"?, "category"?, "tasks"?: [..], "hidden"?: bool,
                  "instagram"?: {"id"?, "username"?, "name"?, "profile_picture_url"?} | null}],
      "page_count"?: N, "with_instagram"?: true}``  (``page_count`` generates N Pages in bulk)
    """
    user_id = str(spec.get("id") or state.fresh_id("2", 14))
    declined = spec.get("declined_scopes") or []
    if not isinstance(declined, list):
        raise TypeError("declined_scopes must be a list")
    user = state.add_user(
        user_id,
        str(spec.get("name") or f"Sandbox User {user_id}"),
        declined_scopes=frozenset(map(str, declined)),
    )
    if spec.get("data_access_expires_at") is not None:
        user.data_access_expires_at = parse_time(spec["data_access_expires_at"])
    page_specs = spec.get("pages")
    if page_specs is None:
        count = int(spec.get("page_count", 0))
        with_ig = bool(spec.get("with_instagram", True))
        page_specs = [{"instagram": {} if with_ig else None} for _ in range(count)]
    if not isinstance(page_specs, list):
        raise TypeError("pages must be a list")
    out_pages: list[dict[str, Any]] = []
    for page_spec in page_specs:
        if not isinstance(page_spec, dict):
            raise TypeError("each page must be an object")
        pid = str(page_spec.get("id") or state.fresh_id("3", 15))
        page = state.add_page(
            user,
            pid,
            str(page_spec.get("name") or f"Sandbox Page {pid}"),
            category=str(page_spec.get("category") or "Insurance Agent"),
            tasks=tuple(
                page_spec.get("tasks")
                or ("ANALYZE", "ADVERTISE", "MESSAGING", "MODERATE", "CREATE_CONTENT", "MANAGE")
            ),
            hidden=bool(page_spec.get("hidden", False)),
        )
        ig = page_spec.get("instagram", {})
        ig_account_id: str | None = page.ig_account_id
        if isinstance(ig, dict) and page.ig_account_id is None:
            iid = str(ig.get("id") or state.fresh_id("17841", 17))
            state.link_instagram(
                page,
                iid,
                str(ig.get("username") or f"sandbox.{iid[-6:]}"),
                ig.get("name"),
                ig.get("profile_picture_url"),
            )
            ig_account_id = iid
        out_pages.append({"id": page.id, "instagram_id": ig_account_id})
    return {"id": user.id, "pages": out_pages}


def describe_user(state: State, user: UserRec) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "declined_scopes": sorted(user.declined_scopes),
        "data_access_expires_at": user.data_access_expires_at,
        "pages": [
            {
                "id": pid,
                "name": state.pages[pid].name,
                "hidden": state.pages[pid].hidden,
                "instagram_id": state.pages[pid].ig_account_id,
            }
            for pid in user.page_ids
        ],
    }
