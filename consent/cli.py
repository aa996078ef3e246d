"""Command line: ``consent <command>`` or ``flask --app consent <command>``."""

from __future__ import annotations

import functools
import json
import secrets
from datetime import UTC, datetime

import click
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy.exc import DBAPIError

from consent import keys, ledger, retention, rights, sites, subjects
from consent.admin.auth import find_admin, set_admin_password
from consent.admin.models import AdminUser
from consent.admin.records import record_verification
from consent.admin.roles import ROLES, grant_role
from consent.db import db, describe_database_error
from consent.demo import seed_demo_site
from consent.errors import InvalidRequest
from consent.models import API_SCOPES, ApiKey, Site


def in_transaction(command):
    """Commit once when the command succeeds; roll back and explain when it fails."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            result = command(*args, **kwargs)
            db.session.commit()
        except InvalidRequest as error:
            db.session.rollback()
            raise click.ClickException(f"{error.field}: {error.message}") from None
        except DBAPIError as error:
            db.session.rollback()
            raise click.ClickException(describe_database_error(error)[1]) from None
        except Exception:
            db.session.rollback()
            raise
        return result

    return wrapper


def site_by_key(site_key: str) -> Site:
    site = sites.get_site_by_key(site_key)
    if site is None:
        raise click.ClickException(f"No site with key {site_key!r}.")
    return site


@click.command("init-db")
def init_db_command():
    """Create or upgrade the database schema to the latest migration."""
    upgrade()
    click.echo("Database is up to date.")


@click.command("seed-demo")
@click.option("--origin", "origins", multiple=True, help="Extra allowed origin (repeatable).")
@click.option(
    "--admin/--no-admin",
    "with_admin",
    default=True,
    show_default=True,
    help="Create the admin 'demo' with a random password, once, if there is no admin yet.",
)
@in_transaction
def seed_demo_command(origins, with_admin):
    """Create or update the demo site with its purposes and policy."""
    site = seed_demo_site(list(origins) or None)
    click.echo(f"Demo site {site.key!r} ready: {', '.join(p.key for p in site.purposes)}.")
    if with_admin and db.session.scalar(db.select(db.func.count(AdminUser.id))) == 0:
        password = secrets.token_urlsafe(12)
        grant_role(set_admin_password("demo", password), "owner")
        click.echo(f"Admin console: /admin/ as 'demo', password {password} (shown once).")


@click.command("create-site")
@click.argument("key")
@click.argument("name")
@click.option("--origin", "origins", multiple=True, help="Allowed origin (repeatable).")
@click.option(
    "--lifetime-days",
    type=int,
    default=182,
    show_default=True,
    help="How long a choice stands (at most 395).",
)
@click.option("--retention-days", type=int, default=3 * 365, show_default=True)
@click.option("--language", "languages", multiple=True, help="Banner language (repeatable).")
@in_transaction
def create_site_command(key, name, origins, lifetime_days, retention_days, languages):
    """Create a site with the four cookie purposes."""
    site = sites.create_site(
        key,
        name,
        origins=list(origins),
        lifetime_days=lifetime_days,
        retention_days=retention_days,
        languages=list(languages) or None,
    )
    for position, purpose in enumerate(sites.STANDARD_PURPOSES):
        sites.set_purpose(
            site,
            purpose["key"],
            position=position,
            **{k: v for k, v in purpose.items() if k != "key"},
        )
    click.echo(f"Site {site.key!r} created.")


@click.command("add-policy")
@click.argument("site_key")
@click.argument("version")
@click.option("--url", help="Where the policy is published.")
@click.option(
    "--material/--not-material",
    default=False,
    help="A material change makes earlier decisions stale.",
)
@click.option("--published-at", type=click.DateTime(), help="UTC; default now.")
@in_transaction
def add_policy_command(site_key, version, url, material, published_at: datetime | None):
    """Publish a policy version for a site."""
    site = site_by_key(site_key)
    policy = sites.publish_policy(
        site,
        version,
        url=url,
        is_material=material,
        published_at=published_at.replace(tzinfo=UTC) if published_at else None,
    )
    kind = "material" if policy.is_material else "non-material"
    click.echo(f"Published {kind} policy version {policy.version!r} for {site.key!r}.")


@click.command("issue-key")
@click.argument("site_key")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(API_SCOPES),
    default=["read"],
    show_default=True,
)
@in_transaction
def issue_key_command(site_key, name, scopes):
    """Issue a server API key; its secret is printed once, here."""
    api_key, secret = keys.issue_key(site_by_key(site_key), name, list(scopes))
    click.echo(f"Key {api_key.prefix} ({api_key.scopes}) for {site_key!r}. Secret, shown once:")
    click.echo(secret)


@click.command("revoke-key")
@click.argument("prefix")
@in_transaction
def revoke_key_command(prefix):
    """Revoke a server API key by its prefix."""
    api_key = keys.revoke_key(prefix)
    click.echo(f"Key {api_key.prefix} revoked.")


@click.command("create-admin")
@click.argument("name")
@click.option("--password", help="Asked for (twice, hidden) when not given.")
@click.option(
    "--replace", is_flag=True, help="Set a new password for an existing admin (ends its sessions)."
)
@click.option(
    "--role",
    type=click.Choice(list(ROLES)),
    help="Grant this role (a new admin without --role becomes owner of every site).",
)
@click.option("--site", "site_key", help="Grant the role on this site only (default: every site).")
@in_transaction
def create_admin_command(name, password, replace, role, site_key):
    """Create an admin for the console at /admin/, or grant an existing one a role."""
    site = site_by_key(site_key) if site_key else None
    if site is not None and role is None:
        raise click.UsageError("Give --role with --site, e.g. --role editor --site shop.")
    admin = find_admin(name)
    if admin is None or replace:
        if password is None:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        admin = set_admin_password(name, password, replace=replace)
        click.echo(f"Admin {admin.name!r} {'updated' if replace else 'created'}.")
    elif role is None:
        raise click.ClickException(
            f"name: An admin named {admin.name!r} exists already; "
            "use --replace for a new password or --role to grant a role."
        )
    if role is None and not admin.roles:
        role = "owner"
    if role is not None:
        grant_role(admin, role, site)
        click.echo(f"{admin.name!r} is {role} on {site.key if site else 'every site'}.")


def _print_table(rows: list[tuple], header: tuple[str, ...]) -> None:
    """Print rows as aligned columns under a header."""
    cells = [header, *[tuple("" if cell is None else str(cell) for cell in row) for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@click.command("list-sites")
def list_sites_command():
    """List the sites: key, name, allowed origins, languages."""
    rows = db.session.scalars(db.select(Site).order_by(Site.key)).all()
    if not rows:
        click.echo("No site yet; create one with `consent create-site KEY NAME`.")
        return
    _print_table(
        [
            (site.key, site.name, " ".join(site.allowed_origins) or "-", " ".join(site.languages))
            for site in rows
        ],
        ("KEY", "NAME", "ORIGINS", "LANGUAGES"),
    )


@click.command("list-keys")
@click.argument("site_key")
def list_keys_command(site_key):
    """List a site's API keys (prefix, name, scopes, use, status); never their secrets."""
    site = site_by_key(site_key)
    rows = db.session.scalars(
        db.select(ApiKey).where(ApiKey.site_id == site.id).order_by(ApiKey.created_at)
    ).all()
    if not rows:
        click.echo(f"No key for {site.key!r}; issue one with `consent issue-key {site.key} NAME`.")
        return
    _print_table(
        [
            (
                key.prefix,
                key.name,
                key.scopes,
                _when(key.created_at),
                _when(key.last_used_at),
                f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active",
            )
            for key in rows
        ],
        ("PREFIX", "NAME", "SCOPES", "CREATED", "LAST USED", "STATUS"),
    )


@click.command("list-admins")
def list_admins_command():
    """List the admins with their roles and last sign-in."""
    rows = db.session.scalars(db.select(AdminUser).order_by(AdminUser.name)).all()
    if not rows:
        click.echo("No admin yet; create one with `consent create-admin NAME`.")
        return
    _print_table(
        [
            (
                admin.name,
                ", ".join(
                    f"{grant.role}@{grant.site.key if grant.site else '*'}" for grant in admin.roles
                )
                or "no role",
                _when(admin.last_signed_in_at),
            )
            for admin in rows
        ],
        ("NAME", "ROLES (role@site, * = every site)", "LAST SIGN-IN"),
    )


@click.command("verify")
@click.argument("site_key", required=False)
def verify_command(site_key):
    """Verify the hash chain of one site (or every site); exit 1 if any is broken.

    Each result is kept, and shown in the admin console.
    """
    try:
        targets = (
            [site_by_key(site_key)]
            if site_key
            else db.session.scalars(db.select(Site).order_by(Site.key)).all()
        )
        reports = [(site, ledger.verify_chain(site)) for site in targets]
    except DBAPIError as error:
        raise click.ClickException(describe_database_error(error)[1]) from None
    broken = 0
    for site, report in reports:
        if report.is_intact:
            click.echo(f"{site.key}: OK, {report.records_checked} records.")
        else:
            broken += 1
            where = f"record #{report.first_bad_sequence}"
            if report.first_bad_record_id is not None:
                where += f" (id {report.first_bad_record_id})"
            click.echo(
                f"{site.key}: BROKEN at {where}: {report.problem}. "
                f"{report.records_checked} records before it are intact."
            )
    try:
        for site, report in reports:
            record_verification(site, report, "cli")
        db.session.commit()
    except DBAPIError as error:  # a read-only database can still be verified
        db.session.rollback()
        click.echo(f"The results were not kept: {describe_database_error(error)[1]}", err=True)
    if broken:
        raise SystemExit(1)


def subject_options(command):
    """--email / --user-id / --visitor-id: which person a rights command is about."""
    for option in (
        click.option("--visitor-id", help="The visitor id the widget was issued."),
        click.option("--user-id", help="The site's own user id."),
        click.option("--email", help="The person's email address."),
    ):
        command = option(command)
    return command


def find_subject_or_fail(site: Site, email, user_id, visitor_id):
    given = [value for value in (email, user_id, visitor_id) if value is not None]
    if len(given) != 1:
        raise click.UsageError("Give exactly one of --email, --user-id, --visitor-id.")
    subject = rights.find_subject(site, email=email, user_id=user_id, visitor_id=visitor_id)
    if subject is None:
        raise click.ClickException("No subject matches.")
    return subject


@click.command("export")
@click.argument("site_key")
@subject_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "csv", "receipts"]),
    default="json",
    show_default=True,
)
@in_transaction
def export_command(site_key, email, user_id, visitor_id, output_format):
    """Print everything held about one person (access and portability)."""
    site = site_by_key(site_key)
    subject = find_subject_or_fail(site, email, user_id, visitor_id)
    if output_format == "receipts":
        click.echo(json.dumps(rights.consent_receipts(site, subject, "cli"), indent=2))
        return
    export = rights.export_subject(site, subject, "cli")
    if output_format == "csv":
        click.echo(rights.export_as_csv(export), nl=False)
    else:
        click.echo(json.dumps(export, indent=2, ensure_ascii=False))


@click.command("erase")
@click.argument("site_key")
@subject_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@in_transaction
def erase_command(site_key, email, user_id, visitor_id, yes):
    """Erase one person: forget their identifiers, keep the verifiable history."""
    site = site_by_key(site_key)
    ledger.lock_chain_head(site)
    subject = find_subject_or_fail(site, email, user_id, visitor_id)
    if not yes:
        click.confirm(f"Erase subject {subject.pseudonym} of {site.key!r}?", abort=True)
    record = rights.erase_subject(site, subject, "cli")
    if record is None:
        click.echo(f"Subject {subject.pseudonym} was already erased.")
    else:
        click.echo(f"Erased subject {subject.pseudonym}; erasure record #{record.sequence}.")


@click.command("purge")
@click.argument("site_key", required=False)
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@in_transaction
def purge_command(site_key, dry_run):
    """Remove records older than each site's retention period, keeping the chain verifiable."""
    targets = (
        [site_by_key(site_key)]
        if site_key
        else db.session.scalars(db.select(Site).order_by(Site.key)).all()
    )
    for site in targets:
        plan = retention.purge(site, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        if plan.count == 0:
            click.echo(f"{site.key}: nothing to remove (retention {site.retention_days} days).")
            continue
        stop = (
            f"; stopped before #{plan.through_sequence + 1} ({plan.stopped_by})"
            if plan.stopped_by
            else ""
        )
        click.echo(
            f"{site.key}: {verb} {plan.count} records "
            f"(#{plan.from_sequence + 1} to #{plan.through_sequence}, recorded before "
            f"{plan.cutoff:%Y-%m-%d %H:%M} UTC){stop}."
        )


@click.command("rotate-data-key")
@in_transaction
def rotate_data_key_command():
    """Re-encrypt every stored email and user id with the current CONSENT_DATA_KEY.

    Put the new key in CONSENT_DATA_KEY and the old one in CONSENT_OLD_DATA_KEYS
    (a JSON list), run this, then keep the old key listed while erased identifiers
    hashed under it should stay suppressed.
    """
    count = subjects.rotate_stored_identifiers()
    click.echo(f"Re-encrypted {count} subjects with the current data key.")


COMMANDS = [
    init_db_command,
    seed_demo_command,
    create_site_command,
    add_policy_command,
    create_admin_command,
    list_sites_command,
    list_keys_command,
    list_admins_command,
    issue_key_command,
    revoke_key_command,
    verify_command,
    export_command,
    erase_command,
    purge_command,
    rotate_data_key_command,
]


def register_cli(app: Flask) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
