"""Who may do what in the admin console: roles held per site, checked on every route.

``owner`` may do everything, admins included; the other roles are named on each view
with ``@requires_role``. A role held with no site holds on every site.
"""

from __future__ import annotations

import functools

from flask import abort, g, request
from sqlalchemy import select

from consent.admin.models import AdminRole, AdminUser
from consent.db import db
from consent.errors import InvalidRequest
from consent.models import Site
from consent.sites import get_site_by_key

ROLES = {
    "owner": "everything, granting roles included",
    "editor": "sites, purposes, policies and API keys",
    "analyst": "consent rates and the record log, no people",
    "rights": "people: look-up, export, erasure and correction",
    "auditor": "read-only everything, the access log included",
}
#: Everyone with any role on the site.
ANY_ROLE = tuple(ROLES)
#: Pages that only show a site's set-up.
SETUP_READERS = ("editor", "auditor")
#: Pages that show counts and the history, never a person's identifiers.
RECORD_READERS = ("analyst", "auditor")


def grant_role(admin: AdminUser, role: str, site: Site | None = None) -> AdminRole:
    """Give an admin a role on one site, or on every site; granting twice changes nothing."""
    if role not in ROLES:
        raise InvalidRequest("role", f"{role!r} is not a role; use one of {', '.join(ROLES)}.")
    for held in admin.roles:
        if held.role == role and held.site_id == (site.id if site else None):
            return held
    grant = AdminRole(role=role, site_id=site.id if site else None)
    admin.roles.append(grant)
    db.session.flush()
    return grant


def revoke_role(admin: AdminUser, grant_id: int) -> None:
    """Take one of an admin's roles away."""
    grant = next((held for held in admin.roles if held.id == grant_id), None)
    if grant is None:
        raise InvalidRequest("role", "This admin does not hold that role.")
    admin.roles.remove(grant)
    db.session.flush()


def roles_on(admin: AdminUser, site: Site | None) -> set[str]:
    """The roles the admin holds on a site (with ``None``: those held on every site)."""
    return {
        held.role
        for held in admin.roles
        if held.site_id is None or (site is not None and held.site_id == site.id)
    }


def has_role(admin: AdminUser | None, site: Site | None, *roles: str) -> bool:
    """Whether the admin is an owner of the site or holds one of ``roles`` on it."""
    if admin is None:
        return False
    held = roles_on(admin, site)
    return "owner" in held or bool(held & set(roles))


def visible_sites(admin: AdminUser) -> list[Site]:
    """The sites the admin holds any role on, by name."""
    query = select(Site).order_by(Site.name, Site.key)
    if not any(held.site_id is None for held in admin.roles):
        query = query.where(Site.id.in_([held.site_id for held in admin.roles]))
    return list(db.session.scalars(query))


def owned_sites(admin: AdminUser) -> list[Site]:
    """The sites on which the admin may grant roles."""
    return [site for site in visible_sites(admin) if has_role(admin, site)]


def requires_role(*roles: str, post: tuple[str, ...] | None = None):
    """Let the view run only for an owner or a holder of one of ``roles``, else 403.

    ``post``, if given, are the roles a POST needs instead (a page that lists to some
    roles and changes for others). The site is the one the route's ``site_key`` names;
    a route without one needs the role on every site (granted with no ``--site``).
    The roles are kept on the view as ``required_roles`` (and ``required_roles_post``),
    so a test can walk every route.
    """

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            site_key = (request.view_args or {}).get("site_key")
            site = get_site_by_key(site_key) if site_key is not None else None
            if site_key is not None and site is None:
                abort(404, description=f"No site with key {site_key!r}.")
            needed = post if post is not None and request.method == "POST" else roles
            if not has_role(g.admin, site, *needed):
                abort(403, description="Your role does not let you do this here.")
            return view(*args, **kwargs)

        wrapper.required_roles = roles
        wrapper.required_roles_post = roles if post is None else post
        return wrapper

    return decorate


def is_owner_anywhere(admin: AdminUser | None) -> bool:
    """Whether the admin owns every site or at least one."""
    return admin is not None and any(held.role == "owner" for held in admin.roles)


def requires_owner(view):
    """Let the view run only for an admin who owns some site (what it may touch is checked
    inside, per site), else 403."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not is_owner_anywhere(g.admin):
            abort(403, description="Only an owner may manage admins and their roles.")
        return view(*args, **kwargs)

    wrapper.required_roles = wrapper.required_roles_post = ("owner",)
    return wrapper


def signed_in_only(view):
    """Mark a view that any signed-in admin may open, whatever their roles."""
    view.required_roles = view.required_roles_post = ()
    return view
