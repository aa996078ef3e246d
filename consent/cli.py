"""Command line: ``consent <command>`` or ``flask --app consent <command>``."""

from __future__ import annotations

import functools
import json
import secrets
import sys
import time
from datetime import UTC, datetime

import click
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy.exc import DBAPIError

from consent import (
    accesslog,
    archive,
    keys,
    regions,
    retention,
    rights,
    rights_requests,
    sites,
    subjects,
    webhooks,
)
from consent.accesslog import log_access
from consent.admin.auth import find_admin, set_admin_password
from consent.admin.models import AdminUser
from consent.admin.roles import ROLES, grant_role
from consent.chain import record_verification, verify_chain
from consent.db import db, describe_database_error
from consent.demo import seed_demo_site
from consent.errors import Conflict, InvalidRequest
from consent.mail import MailUnavailable
from consent.models import (
    API_SCOPES,
    RIGHTS_KINDS,
    WEBHOOK_EVENTS,
    ApiKey,
    BannerVersion,
    Scan,
    Site,
)
from consent.scan import store as scans
from consent.scan.findings import LEVELS, is_at_or_above
from consent.scan.observations import PASS_TITLES
from consent.scan.report import format_table, short_page
from consent.schemas import BannerVersionSchema


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
        except (Conflict, MailUnavailable) as error:
            db.session.rollback()
            raise click.ClickException(str(error)) from None
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
@click.option(
    "--effective-at",
    "--published-at",
    "effective_at",
    type=click.DateTime(),
    help="UTC; default now. A later time schedules the version: the banner announces it "
    "and asks again exactly then.",
)
@click.option(
    "--text-file",
    type=click.File("rb"),
    help="The policy text as published: its SHA-256 is kept with the version.",
)
@in_transaction
def add_policy_command(site_key, version, url, material, effective_at: datetime | None, text_file):
    """Publish a policy version for a site, now or scheduled ahead."""
    site = site_by_key(site_key)
    policy = sites.publish_policy(
        site,
        version,
        url=url,
        is_material=material,
        published_at=effective_at.replace(tzinfo=UTC) if effective_at else None,
        text=text_file.read() if text_file else None,
    )
    kind = "material" if policy.is_material else "non-material"
    when = f", in effect from {policy.published_at:%Y-%m-%d %H:%M:%S} UTC" if effective_at else ""
    click.echo(f"Published {kind} policy version {policy.version!r} for {site.key!r}{when}.")
    if policy.text_sha256:
        click.echo(f"Text SHA-256: {policy.text_sha256}")


@click.command("set-appearance")
@click.argument("site_key")
@click.option("--layout", type=click.Choice(sites.APPEARANCE_CHOICES["layout"]))
@click.option("--theme", type=click.Choice(sites.APPEARANCE_CHOICES["theme"]))
@click.option(
    "--settings-button/--no-settings-button",
    default=None,
    help="The floating button that reopens the preference centre.",
)
@click.option("--button-side", type=click.Choice(sites.APPEARANCE_CHOICES["button_side"]))
@in_transaction
def set_appearance_command(site_key, **changes):
    """Choose how a site's banner looks: layout, theme, settings button."""
    site = site_by_key(site_key)
    given = {name: value for name, value in changes.items() if value is not None}
    site.appearance = sites.validate_appearance({**(site.appearance or {}), **given})
    shown = ", ".join(f"{name}={value}" for name, value in site.appearance.items())
    click.echo(f"Banner of {site.key!r}: {shown}.")


@click.command("set-regions")
@click.argument("site_key")
@click.argument("rules", nargs=-1)
@click.option(
    "--opt-out",
    "opt_out",
    multiple=True,
    help="Purpose allowed until the person opts out under an opt-out or notice rule "
    "(repeatable; replaces the earlier list).",
)
@click.option(
    "--notice-only",
    "notice_only",
    multiple=True,
    help="Purpose allowed with a notice under a notice rule (repeatable; replaces).",
)
@click.option("--clear", is_flag=True, help="Remove every rule: opt-in everywhere.")
@in_transaction
def set_regions_command(site_key, rules, opt_out, notice_only, clear):
    """Set a site's region rules, in order: "EEA,UK,CH=opt-in" "US-PRIVACY-STATES=opt-out"."""
    site = site_by_key(site_key)
    if rules or clear:
        regions.set_region_rules(site, rules)
    regions.set_purpose_defaults(site, opt_out=opt_out or None, notice_only=notice_only or None)
    click.echo(regions.describe_rules(site))


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
    """Verify the hash chains (history and access log) of one site or every site.

    Exit status 1 if any is broken. Each history result is kept, and shown in the
    admin console.
    """
    try:
        targets = (
            [site_by_key(site_key)]
            if site_key
            else db.session.scalars(db.select(Site).order_by(Site.key)).all()
        )
        reports = [
            (site, verify_chain(site), accesslog.verify_access_log(site)) for site in targets
        ]
    except DBAPIError as error:
        raise click.ClickException(describe_database_error(error)[1]) from None
    broken = 0
    for site, report, access_report in reports:
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
        if access_report.is_intact:
            click.echo(f"{site.key}: access log OK, {access_report.records_checked} entries.")
        else:
            broken += 1
            where = f"entry #{access_report.first_bad_sequence}"
            if access_report.first_bad_record_id is not None:
                where += f" (id {access_report.first_bad_record_id})"
            click.echo(
                f"{site.key}: access log BROKEN at {where}: {access_report.problem}. "
                f"{access_report.records_checked} entries before it are intact."
            )
    try:
        for site, report, _ in reports:
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


reason_option = click.option(
    "--reason", help="Why (free text or a ticket number), kept in the access log."
)


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
@reason_option
@in_transaction
def export_command(site_key, email, user_id, visitor_id, output_format, reason):
    """Print everything held about one person (access and portability)."""
    site = site_by_key(site_key)
    subject = find_subject_or_fail(site, email, user_id, visitor_id)
    if output_format == "receipts":
        click.echo(json.dumps(rights.consent_receipts(site, subject, "cli", reason), indent=2))
        return
    export = rights.export_subject(site, subject, "cli", reason)
    if output_format == "csv":
        click.echo(rights.export_as_csv(export), nl=False)
    else:
        click.echo(json.dumps(export, indent=2, ensure_ascii=False))


@click.command("erase")
@click.argument("site_key")
@subject_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@reason_option
@in_transaction
def erase_command(site_key, email, user_id, visitor_id, yes, reason):
    """Erase one person: forget their identifiers, keep the verifiable history."""
    site = site_by_key(site_key)
    subject = find_subject_or_fail(site, email, user_id, visitor_id)
    if not yes:
        click.confirm(f"Erase subject {subject.pseudonym} of {site.key!r}?", abort=True)
    record = rights.erase_subject(site, subject, "cli", reason)
    if record is None:
        click.echo(f"Subject {subject.pseudonym} was already erased.")
    else:
        click.echo(f"Erased subject {subject.pseudonym}; erasure record #{record.sequence}.")


@click.command("purge")
@click.argument("site_key", required=False)
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@in_transaction
def purge_command(site_key, dry_run):
    """Apply each site's retention to every data class, keeping the chains verifiable.

    Safe to run from several machines at once: one purge at a time holds the lock.
    """
    if not retention.take_purge_lock():
        click.echo("Another purge is running; nothing done.")
        return
    targets = (
        [site_by_key(site_key)]
        if site_key
        else db.session.scalars(db.select(Site).order_by(Site.key)).all()
    )
    verb = "would remove" if dry_run else "removed"
    for site in targets:
        result = retention.purge_site(site, dry_run=dry_run)
        plan = result.records
        if plan.count == 0:
            click.echo(f"{site.key}: nothing to remove (retention {site.retention_days} days).")
        else:
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
        others = ", ".join(f"{count} {name}" for name, count in result.removed.items())
        click.echo(f"{site.key}: {verb} {others}.")


@click.command("set-retention")
@click.argument("site_key")
@click.option("--records-days", type=click.IntRange(min=1), help="Consent records.")
@click.option("--access-log-days", type=click.IntRange(min=1), help="Access-log entries.")
@click.option(
    "--rights-request-days",
    type=click.IntRange(min=1),
    help="Rights requests, after completion or refusal.",
)
@click.option("--idempotency-hours", type=click.IntRange(min=1), help="Idempotency answers.")
@in_transaction
def set_retention_command(
    site_key, records_days, access_log_days, rights_request_days, idempotency_hours
):
    """Change how long a site keeps each data class, then print them all."""
    site = site_by_key(site_key)
    if records_days is not None:
        sites.validate_site_settings(lifetime_days=site.lifetime_days, retention_days=records_days)
        site.retention_days = records_days
    for column, value in (
        ("access_log_retention_days", access_log_days),
        ("rights_request_retention_days", rights_request_days),
        ("idempotency_retention_hours", idempotency_hours),
    ):
        if value is not None:
            setattr(site, column, value)
    db.session.flush()
    click.echo(
        f"{site.key}: records {site.retention_days} days (and while in force), "
        f"access log {site.access_log_retention_days} days, "
        f"rights requests {site.rights_request_retention_days} days after closing, "
        f"idempotency answers {site.idempotency_retention_hours} hours; subjects, "
        f"visitors and archived banners follow the {site.lifetime_days}-day consent lifetime."
    )


@click.command("banner-version")
@click.argument("config_hash")
@click.option("--site", "site_key", help="The site, when several served the same banner.")
def banner_version_command(config_hash, site_key):
    """Print the banner configuration a record's config_hash names, as it was served."""
    if not archive.is_config_hash(config_hash):
        raise click.ClickException("config_hash: give the 64 lower-case hex digits of a record.")
    query = db.select(BannerVersion, Site.key).join(Site, Site.id == BannerVersion.site_id)
    query = query.where(BannerVersion.config_hash == config_hash)
    if site_key:
        query = query.where(Site.id == site_by_key(site_key).id)
    found = db.session.execute(query.order_by(Site.key)).all()
    if not found:
        raise click.ClickException(f"No banner with hash {config_hash} was served.")
    shown = [
        {"site": key, **BannerVersionSchema().dump(archive.describe_banner_version(version))}
        for version, key in found
    ]
    click.echo(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2, ensure_ascii=False))


@click.group("rights-request")
def rights_request_group():
    """Register and handle rights requests (for requests that arrived by email)."""


@rights_request_group.command("receive")
@click.argument("site_key")
@click.option("--kind", required=True, type=click.Choice(RIGHTS_KINDS))
@click.option("--email", required=True, help="The address the verification link goes to.")
@click.option("--message", help="What the person asked, in their words.")
@in_transaction
def receive_rights_request_command(site_key, kind, email, message):
    """Register a request that arrived by email; its sender gets the verification link."""
    request = rights_requests.receive_request(
        site_by_key(site_key), kind, "email", "cli", email=email, message=message
    )
    click.echo(
        f"Request {request.reference} ({request.kind}) received; due {request.due_at:%Y-%m-%d}. "
        "The verification link was emailed."
    )


@rights_request_group.command("list")
@click.argument("site_key")
@click.option("--overdue", is_flag=True, help="Only open requests past their due date.")
@in_transaction
def list_rights_requests_command(site_key, overdue):
    """List a site's requests: open ones by due date, then closed ones."""
    site = site_by_key(site_key)
    found = rights_requests.site_requests(site, overdue_only=overdue)
    for request in found:
        late = " OVERDUE" if rights_requests.is_overdue(request) else ""
        click.echo(
            f"{request.reference}  {request.kind:<10} {request.state:<9} "
            f"received {request.received_at:%Y-%m-%d}  due {request.due_at:%Y-%m-%d}{late}"
        )
    log_access(site, "cli", "rights_request_list", details={"count": len(found)})
    if not found:
        click.echo("No request." if not overdue else "No overdue request.")


def request_or_fail(reference: str):
    request = rights_requests.find_request(reference)
    if request is None:
        raise click.ClickException(f"No rights request {reference!r}.")
    return request


@rights_request_group.command("extend")
@click.argument("reference")
@click.option("--reason", required=True, help="Why more time is needed; the person is told.")
@in_transaction
def extend_rights_request_command(reference, reason):
    """Extend a request's deadline to three months from receipt."""
    request = rights_requests.extend_request(request_or_fail(reference), reason, "cli")
    click.echo(f"Request {request.reference} extended; due {request.due_at:%Y-%m-%d}.")


@rights_request_group.command("refuse")
@click.argument("reference")
@click.option("--reason", required=True, help="Why it is refused; the person is told.")
@in_transaction
def refuse_rights_request_command(reference, reason):
    """Refuse a request, telling the person why."""
    request = rights_requests.refuse_request(request_or_fail(reference), reason, "cli")
    click.echo(f"Request {request.reference} refused.")


@rights_request_group.command("complete")
@click.argument("reference")
@in_transaction
def complete_rights_request_command(reference):
    """Carry out a verified request (export link, erasure, objection) and close it."""
    request = request_or_fail(reference)
    rights_requests.complete_request(request, "cli")
    click.echo(f"Request {request.reference} completed; the person was emailed.")


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


@click.command("scan")
@click.argument("site_key")
@click.argument("urls", nargs=-1, required=True)
@click.option("--pages", type=int, default=10, show_default=True, help="Most pages to visit.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the JSON report here ('-': to standard output, instead of the table).",
)
@click.option(
    "--fail-on",
    type=click.Choice(LEVELS),
    default="violation",
    show_default=True,
    help="Exit 1 when a finding at or above this level exists.",
)
@click.option(
    "--allow-host", "allow_hosts", multiple=True, help="A host of the site's own (staging, CDN)."
)
@click.option(
    "--time-limit",
    type=int,
    default=scans.DEFAULT_TIME_LIMIT,
    show_default=True,
    help="Seconds for the whole scan.",
)
@click.option(
    "--page-timeout", type=int, default=15, show_default=True, help="Seconds for one page to load."
)
@click.option("--scan-id", type=int, hidden=True, help="Fill in this running scan (the admin's).")
def scan_command(
    site_key, urls, pages, json_path, fail_on, allow_hosts, time_limit, page_timeout, scan_id
):
    """Scan a site's pages before a choice, after Reject all and after Accept all."""
    try:  # Playwright is optional (the consent[scan] extra): import it only to scan
        from consent.scan.crawl import ScanError, crawl
    except ImportError:
        raise click.ClickException(
            "The scanner needs Playwright: pip install 'consent[scan]'."
        ) from None
    site = site_by_key(site_key)
    scan = db.session.get(Scan, scan_id) if scan_id else None
    if scan_id and (scan is None or scan.site_id != site.id):
        raise click.ClickException(f"No scan {scan_id} of {site_key!r}.")
    try:
        plan = scans.plan_scan(
            site,
            list(urls),
            allow_hosts=list(allow_hosts),
            max_pages=pages,
            time_limit=time_limit,
            page_timeout=page_timeout,
        )
        scan = scan or scans.start_scan(plan, site, "cli")
        db.session.commit()
    except InvalidRequest as error:
        if scan is not None:  # the admin's scan: say why it never ran
            scans.fail_scan(scan, f"{error.field}: {error.message}")
            db.session.commit()
        raise click.ClickException(f"{error.field}: {error.message}") from None
    except DBAPIError as error:
        db.session.rollback()
        raise click.ClickException(describe_database_error(error)[1]) from None
    started_at = scan.started_at
    quiet = json_path == "-"
    with click.progressbar(
        length=3 * plan.max_pages,
        label=f"Scanning {plan.site_key}",
        file=sys.stderr,
        item_show_func=lambda item: item,
        hidden=quiet,
    ) as bar:

        def progress(pass_name: str, url: str, total: int) -> None:
            bar.length = total
            bar.update(1, f"{PASS_TITLES[pass_name]}: {short_page(url)}")
            if scan_id:
                scan.progress_done, scan.progress_total = bar.pos, total
                db.session.commit()

        try:
            db.session.commit()  # touch no row until it is done: SQLite would refuse writes
            seen = crawl(plan, progress)
        except ScanError as error:
            scans.fail_scan(scan, str(error))
            db.session.commit()
            raise click.ClickException(f"The scan failed: {error}.") from None
        except BaseException:  # a bug or Ctrl-C: the stored scan must not stay "running"
            db.session.rollback()
            scans.fail_scan(scan, "the scan stopped before it finished")
            db.session.commit()
            raise
    findings, report = scans.assess(site, plan, seen, started_at)
    try:
        scans.finish_scan(scan, report)
        db.session.commit()
    except DBAPIError as error:  # the scan itself still counts
        db.session.rollback()
        click.echo(f"The scan was not kept: {describe_database_error(error)[1]}", err=True)
    if json_path:
        with click.open_file(json_path, "w") as file:
            json.dump(report, file, indent=2, ensure_ascii=False)
            file.write("\n")
    if not quiet:
        click.echo(format_table(report))
    if any(is_at_or_above(finding.level, fail_on) for finding in findings):
        raise SystemExit(1)


@click.command("add-webhook")
@click.argument("site_key")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    type=click.Choice(WEBHOOK_EVENTS),
    help="An event to send (repeatable).",
)
@click.option("--include-email", is_flag=True, help="Payloads carry the person's email.")
@in_transaction
def add_webhook_command(site_key, url, events, include_email):
    """Send a site's events to URL, signed; the signing secret is printed once, here."""
    endpoint, secret = webhooks.add_endpoint(
        site_by_key(site_key), url, list(events), is_email_included=include_email
    )
    click.echo(f"Webhook {endpoint.id} for {site_key!r}: {', '.join(endpoint.events)}.")
    click.echo(f"Signing secret, shown once: {secret}")


@click.command("dispatch")
@click.option("--once", is_flag=True, help="Send what is due now, then stop.")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between polls."
)
@click.option("--batch", type=click.IntRange(1, 500), default=20, show_default=True)
def dispatch_command(once, interval, batch):
    """Send webhook deliveries as they fall due (several dispatchers may run at once)."""
    while True:
        try:
            counts = webhooks.dispatch_once(batch)
        except DBAPIError as error:
            db.session.rollback()
            if once:
                raise click.ClickException(describe_database_error(error)[1]) from None
            click.echo(f"dispatch: {describe_database_error(error)[1]}", err=True)
            counts = {}
        if counts:
            click.echo(", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())))
        elif once:
            return
        else:
            time.sleep(interval)


COMMANDS = [
    init_db_command,
    seed_demo_command,
    create_site_command,
    add_policy_command,
    set_appearance_command,
    set_regions_command,
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
    set_retention_command,
    banner_version_command,
    rights_request_group,
    rotate_data_key_command,
    scan_command,
    add_webhook_command,
    dispatch_command,
]


def register_cli(app: Flask) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
