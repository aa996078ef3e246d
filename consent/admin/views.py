"""The admin console's pages: thin views over the same domain functions as the CLI and API.

Every page needs a signed-in admin (``auth.require_admin``); every form that changes
something carries a CSRF token. Invalid input re-renders the form with status 422 (400
for a missing or stale CSRF token), so the request rolls back and nothing is written.
"""

from __future__ import annotations

import json
from datetime import timedelta
from math import ceil

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import generate_csrf
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException
from wtforms.fields.choices import SelectChoice

from consent import keys, regions, rights, sites
from consent.accesslog import log_access
from consent.admin import auth, editing, rates, records, roles
from consent.admin.forms import (
    ANY,
    ActionForm,
    EraseForm,
    ExportForm,
    GrantForm,
    KeyForm,
    LookupForm,
    PasswordChangeForm,
    PersonForm,
    PolicyForm,
    PurposeForm,
    RatesForm,
    RecordFilterForm,
    SignInForm,
    SiteForm,
    utc_datetime,
)
from consent.admin.models import AdminRole, AdminUser
from consent.chain import latest_verification, record_verification, verify_chain
from consent.check import describe_state
from consent.db import db, now_utc
from consent.errors import InvalidRequest
from consent.limits import client_address
from consent.links import public_base_url
from consent.models import ApiKey, BannerImpression, ChainHead, Site, VerificationRun
from consent.widget import embed_snippet

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(auth.require_admin)

#: Pages that show personal data or a secret must not be kept by the browser.
NO_STORE = {"Cache-Control": "no-store"}


@bp.context_processor
def _template_globals():
    return {
        "csrf_token": generate_csrf,
        "admin": g.get("admin"),
        "can_open": _can_open,
        "may": lambda site, *names: roles.has_role(g.get("admin"), site, *names),
        "is_owner": roles.is_owner_anywhere(g.get("admin")),
    }


def _can_open(endpoint: str, site: Site | None = None) -> bool:
    """Whether the signed-in admin may open (GET) the page of ``endpoint``."""
    needed = getattr(current_app.view_functions[endpoint], "required_roles", None)
    if needed is None or g.get("admin") is None:
        return False
    return needed == () or roles.has_role(g.admin, site, *needed)


@bp.errorhandler(HTTPException)
def _error_page(error: HTTPException):
    return render_template("admin/error.html", error=error), error.code


# --- helpers --------------------------------------------------------------------------


def _site_or_404(site_key: str) -> Site:
    site = sites.get_site_by_key(site_key)
    if site is None:
        abort(404, description=f"No site with key {site_key!r}.")
    return site


def _refused(form) -> int:
    """The status for a form that did not validate: 400 without a valid CSRF token."""
    csrf = getattr(form, "csrf_token", None)
    return 400 if csrf is not None and csrf.errors else 422


def _attach(form, error: InvalidRequest) -> int:
    """Show a domain refusal on the field it names (or on the form); return 422."""
    field = getattr(form, error.field, None)
    (field.errors if field is not None else form.form_errors).append(error.message)
    return 422


def _require_valid(form) -> None:
    """For buttons: refuse a POST whose CSRF token is missing or stale."""
    if not form.validate_on_submit():
        abort(
            400,
            description="This form has expired or did not come from this page. "
            "Go back, reload the page and try again.",
        )


def _hash_change_message(before: str, after: str) -> str:
    if before == after:
        return "What the banner shows is unchanged."
    return (
        f"What the banner shows changed (configuration {before[:8]} → {after[:8]}); "
        "the widget sees the new configuration hash."
    )


# --- sign-in --------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """Sign in; five failures in a row lock the name for a while."""
    form = SignInForm()
    if not form.validate_on_submit():
        return render_template("admin/sign_in.html", form=form), _refused(
            form
        ) if form.is_submitted() else 200
    try:
        admin = auth.authenticate(form.name.data, form.password.data, client_address())
    except auth.LockedOut as locked:
        seconds = max(1, int((locked.until - now_utc()).total_seconds()))
        form.form_errors.append(
            f"Too many failed attempts. Try again in {ceil(seconds / 60)} minutes."
        )
        return render_template("admin/sign_in.html", form=form), 429, {"Retry-After": str(seconds)}
    if admin is None:
        form.form_errors.append("Wrong name or password.")
        # Answered 200 on purpose: the failure just counted must be committed.
        return render_template("admin/sign_in.html", form=form)
    auth.start_session(admin)
    return redirect(auth.safe_next(request.args.get("next")))


@bp.post("/sign-out")
@roles.signed_in_only
def sign_out():
    """Sign out: this session ends on the server, so no copy of its cookie works."""
    _require_valid(ActionForm())
    auth.end_session()
    flash("You are signed out.")
    return redirect(url_for("admin.sign_in"))


# --- the admin's own account -----------------------------------------------------------


def _account_page(form: PasswordChangeForm, status: int = 200):
    return (
        render_template(
            "admin/account.html",
            form=form,
            sessions=auth.active_sessions(g.admin),
            this_session=g.admin_session,
            grants=sorted(g.admin.roles, key=lambda grant: (grant.site_id or 0, grant.role)),
            role_names=roles.ROLES,
        ),
        status,
        NO_STORE,
    )


@bp.get("/account")
@roles.signed_in_only
def account():
    """Show the admin's roles and open sessions, with password change and sign-out buttons."""
    return _account_page(PasswordChangeForm())


@bp.post("/account/password")
@roles.signed_in_only
def change_password():
    """Set a new password; every other session of this admin ends."""
    form = PasswordChangeForm()
    if not form.validate_on_submit():
        return _account_page(form, _refused(form))
    if not auth.check_password(g.admin, form.current.data):
        form.current.errors.append("This is not your current password.")
        return _account_page(form, 422)
    auth.set_admin_password(g.admin.name, form.new.data, replace=True)
    auth.start_session(g.admin)
    flash("Password changed. Every other session is signed out.")
    return redirect(url_for("admin.account"))


@bp.post("/account/sign-out-everywhere")
@roles.signed_in_only
def sign_out_everywhere():
    """End every session of this admin, this one included."""
    _require_valid(ActionForm())
    ended = auth.end_all_sessions(g.admin)
    auth.end_session()
    flash(f"Signed out everywhere ({ended} sessions ended).")
    return redirect(url_for("admin.sign_in"))


@bp.post("/account/sessions/<int:session_id>/end")
@roles.signed_in_only
def end_other_session(session_id: int):
    """End one of this admin's sessions (another browser)."""
    _require_valid(ActionForm())
    if not auth.end_session_of(g.admin, session_id):
        abort(404, description="No such session of yours.")
    flash("That session is signed out.")
    return redirect(url_for("admin.account"))


# --- admins and their roles ------------------------------------------------------------


def _grant_choices(form: GrantForm) -> None:
    admins = db.session.scalars(select(AdminUser).order_by(AdminUser.name)).all()
    form.name.choices = [admin.name for admin in admins]
    form.role.choices = [
        SelectChoice(name, f"{name}: {text}") for name, text in roles.ROLES.items()
    ]
    global_owner = "owner" in roles.roles_on(g.admin, None)
    form.site.choices = ([SelectChoice("", "every site")] if global_owner else []) + [
        SelectChoice(site.key, f"{site.name} ({site.key})") for site in roles.owned_sites(g.admin)
    ]


def _admins_page(form: GrantForm, status: int = 200):
    owned = {site.id for site in roles.owned_sites(g.admin)}
    global_owner = "owner" in roles.roles_on(g.admin, None)
    admins = db.session.scalars(select(AdminUser).order_by(AdminUser.name)).all()
    return render_template(
        "admin/admins.html",
        form=form,
        admins=admins,
        may_revoke=lambda grant: global_owner or grant.site_id in owned,
        role_names=roles.ROLES,
    ), status


@bp.route("/admins", methods=["GET", "POST"])
@roles.requires_owner
def admins():
    """List the admins and their roles; grant a role on a site the owner holds."""
    form = GrantForm()
    _grant_choices(form)
    if not form.validate_on_submit():
        return _admins_page(form, _refused(form) if form.is_submitted() else 200)
    grantee = auth.find_admin(form.name.data)
    site = sites.get_site_by_key(form.site.data) if form.site.data else None
    roles.grant_role(grantee, form.role.data, site)
    flash(f"{grantee.name} is now {form.role.data} on {site.name if site else 'every site'}.")
    return redirect(url_for("admin.admins"))


@bp.post("/admins/roles/<int:grant_id>/revoke")
@roles.requires_owner
def revoke_grant(grant_id: int):
    """Take a role away from an admin, on a site the owner holds."""
    _require_valid(ActionForm())
    grant = db.get_or_404(AdminRole, grant_id)
    if not roles.has_role(g.admin, grant.site):
        abort(403, description="Only an owner of that site may take the role away.")
    roles.revoke_role(grant.admin, grant.id)
    flash(f"{grant.admin.name} is no longer {grant.role} there.")
    return redirect(url_for("admin.admins"))


# --- sites ----------------------------------------------------------------------------


@bp.get("/")
@roles.signed_in_only
def dashboard():
    """List the sites with their records, recent banners and last verification."""
    all_sites = roles.visible_sites(g.admin)
    since = now_utc().date() - timedelta(days=rates.DEFAULT_RANGE_DAYS - 1)
    record_counts = dict(db.session.execute(select(ChainHead.site_id, ChainHead.sequence)).all())
    banners = dict(
        db.session.execute(
            select(BannerImpression.site_id, func.sum(BannerImpression.count))
            .where(BannerImpression.day >= since)
            .group_by(BannerImpression.site_id)
        ).all()
    )
    latest_runs = {
        run.site_id: run
        for run in db.session.scalars(
            select(VerificationRun).where(
                VerificationRun.id.in_(
                    select(func.max(VerificationRun.id)).group_by(VerificationRun.site_id)
                )
            )
        )
    }
    return render_template(
        "admin/dashboard.html",
        sites=all_sites,
        record_counts=record_counts,
        banners=banners,
        latest_runs=latest_runs,
    )


SITE_FIELDS = (
    "name",
    "origins",
    "languages",
    "lifetime_days",
    "retention_days",
    "controller_name",
    "controller_contact",
    "logo_url",
)


def _site_values(form: SiteForm) -> dict:
    return {
        **{name: form[name].data for name in SITE_FIELDS},
        "texts": form.texts_value(),
        "appearance": form.appearance_value(),
        "region_rules": form.region_rules.data,
    }


def _site_form_page(form: SiteForm, site: Site | None, status: int = 200):
    return render_template("admin/site_form.html", form=form, site=site), status


@bp.route("/sites/new", methods=["GET", "POST"])
@roles.requires_role("editor")
def new_site():
    """Create a site with the four standard cookie purposes."""
    form = SiteForm(data={"languages": ["en"], "lifetime_days": 182, "retention_days": 3 * 365})
    action = request.form.get("action", "save")
    if form.is_submitted() and action != "save":
        form.apply_row_action(action)
        return _site_form_page(form, None)
    is_valid = form.validate_on_submit()
    if form.is_submitted() and form.key.data and sites.get_site_by_key(form.key.data):
        form.key.errors = [*form.key.errors, f"A site with key {form.key.data!r} exists already."]
        is_valid = False
    if not is_valid:
        return _site_form_page(form, None, _refused(form) if form.is_submitted() else 200)
    values = _site_values(form)
    try:
        site = sites.create_site(
            form.key.data,
            values["name"],
            origins=values["origins"],
            lifetime_days=values["lifetime_days"],
            retention_days=values["retention_days"],
            languages=values["languages"],
            texts=values["texts"],
            appearance=values["appearance"],
        )
        regions.set_region_rules(site, values["region_rules"])
    except InvalidRequest as error:
        return _site_form_page(form, None, _attach(form, error))
    site.controller_name = values["controller_name"] or None
    site.controller_contact = values["controller_contact"] or None
    site.logo_url = values["logo_url"] or None
    for position, purpose in enumerate(sites.STANDARD_PURPOSES):
        sites.set_purpose(site, position=position, **purpose)
    flash(f"Site {site.key!r} created with the standard purposes.")
    return redirect(url_for("admin.site", site_key=site.key))


@bp.get("/sites/<site_key>")
@roles.requires_role(*roles.ANY_ROLE)
def site(site_key: str):
    """Show a site: its embed snippet, consent rates of the last 30 days, chain status."""
    site = _site_or_404(site_key)
    start, end = rates.default_range(now_utc().date())
    site_rates = rates.consent_rates(site, start, end)
    return render_template(
        "admin/site.html",
        site=site,
        rates=site_rates,
        chart=rates.share_chart(site_rates),
        snippet=embed_snippet(public_base_url(), site.key),
        policy=sites.latest_policy(site),
        config_hash=editing.config_hash(site),
        run=latest_verification(site),
        refused=sites.refused_origins(site),
    )


@bp.route("/sites/<site_key>/edit", methods=["GET", "POST"])
@roles.requires_role("editor")
def edit_site(site_key: str):
    """Change a site's name, origins, languages, lifetime, retention and texts."""
    site = _site_or_404(site_key)
    form = SiteForm(
        data={
            "name": site.name,
            "origins": site.allowed_origins,
            "languages": site.languages,
            "lifetime_days": site.lifetime_days,
            "retention_days": site.retention_days,
            "texts": SiteForm.text_rows(site.texts),
            "controller_name": site.controller_name,
            "controller_contact": site.controller_contact,
            "logo_url": site.logo_url,
            "region_rules": [regions.format_rule(rule) for rule in site.region_rules or []],
            **sites.validate_appearance(site.appearance or {}),
        }
    )
    del form.key
    action = request.form.get("action", "save")
    if form.is_submitted() and action != "save":
        form.apply_row_action(action)
        return _site_form_page(form, site)
    if not form.validate_on_submit():
        return _site_form_page(form, site, _refused(form) if form.is_submitted() else 200)
    before = editing.config_hash(site)
    values = _site_values(form)
    try:
        regions.set_region_rules(site, values.pop("region_rules"))
        editing.update_site(site, **values)
    except InvalidRequest as error:
        return _site_form_page(form, site, _attach(form, error))
    flash(f"Settings saved. {_hash_change_message(before, editing.config_hash(site))}")
    return redirect(url_for("admin.site", site_key=site.key))


# --- purposes -------------------------------------------------------------------------


@bp.get("/sites/<site_key>/purposes")
@roles.requires_role(*roles.SETUP_READERS)
def purposes(site_key: str):
    """List a site's purposes in banner order, with buttons to reorder them."""
    site = _site_or_404(site_key)
    return render_template("admin/purposes.html", site=site, config_hash=editing.config_hash(site))


@bp.route("/sites/<site_key>/purposes/new", methods=["GET", "POST"])
@bp.route("/sites/<site_key>/purposes/<purpose_key>", methods=["GET", "POST"])
@roles.requires_role("editor")
def edit_purpose(site_key: str, purpose_key: str | None = None):
    """Add a purpose, or edit one: texts, cookies, services, Consent Mode signals.

    The row buttons (add, remove, look up) re-show the form changed and save nothing,
    so the editor works without JavaScript.
    """
    site = _site_or_404(site_key)
    purpose = None
    if purpose_key is not None:
        purpose = next((p for p in site.purposes if p.key == purpose_key), None)
        if purpose is None:
            abort(404, description=f"No purpose {purpose_key!r} on this site.")
    form = PurposeForm.from_purpose(purpose, site.languages)
    if purpose is not None:
        del form.key

    def page(status: int = 200, note: str | None = None):
        return render_template(
            "admin/purpose_form.html", site=site, purpose=purpose, form=form, note=note
        ), status

    action = request.form.get("action", "save")
    if form.is_submitted() and action != "save":
        return page(note=form.apply_row_action(action))
    if not form.validate_on_submit():
        return page(_refused(form) if form.is_submitted() else 200)
    key = purpose.key if purpose else form.key.data
    if purpose is None and any(p.key == key for p in site.purposes):
        form.key.errors.append(f"Purpose {key!r} exists already; edit it instead.")
        return page(422)
    before = editing.config_hash(site)
    try:
        sites.set_purpose(site, key, **form.purpose_values())
    except InvalidRequest as error:
        return page(_attach(form, error))
    flash(f"Purpose {key!r} saved. {_hash_change_message(before, editing.config_hash(site))}")
    return redirect(url_for("admin.purposes", site_key=site.key))


@bp.post("/sites/<site_key>/purposes/<purpose_key>/move")
@roles.requires_role("editor")
def move_purpose(site_key: str, purpose_key: str):
    """Move a purpose one place up or down in the banner."""
    site = _site_or_404(site_key)
    _require_valid(ActionForm())
    if not any(p.key == purpose_key for p in site.purposes):
        abort(404, description=f"No purpose {purpose_key!r} on this site.")
    before = editing.config_hash(site)
    editing.move_purpose(site, purpose_key, -1 if request.form.get("direction") == "up" else 1)
    flash(
        f"Purpose {purpose_key!r} moved. {_hash_change_message(before, editing.config_hash(site))}"
    )
    return redirect(url_for("admin.purposes", site_key=site.key))


# --- policy versions ------------------------------------------------------------------


@bp.route("/sites/<site_key>/policies", methods=["GET", "POST"])
@roles.requires_role(*roles.SETUP_READERS, post=("editor",))
def policies(site_key: str):
    """List policy versions and publish a new one; say how many decisions it makes stale."""
    site = _site_or_404(site_key)
    form = PolicyForm()
    status = 200
    if form.validate_on_submit():
        try:
            policy = sites.publish_policy(
                site,
                form.version.data.strip(),
                url=form.url.data or None,
                is_material=form.is_material.data,
                published_at=utc_datetime(form.published_at.data),
            )
        except InvalidRequest as error:
            status = _attach(form, error)
        else:
            message = f"Published policy version {policy.version!r}."
            if policy.published_at > now_utc():
                message = (
                    f"Scheduled policy version {policy.version!r}: it takes effect "
                    f"{policy.published_at:%Y-%m-%d %H:%M} UTC. The banner announces it now"
                    + (" and asks again then." if policy.is_material else ".")
                )
            elif policy.is_material:
                stale = editing.stale_decision_count(site, policy.published_at)
                message += (
                    f" It is a material change: {stale} current decisions are now "
                    "stale, and those visitors will be asked again."
                )
            flash(message)
            return redirect(url_for("admin.policies", site_key=site.key))
    elif form.is_submitted():
        status = _refused(form)
    versions = list(reversed(site.policy_versions))
    stale_counts = {
        policy.id: editing.stale_decision_count(site, policy.published_at)
        for policy in versions
        if policy.is_material
    }
    return render_template(
        "admin/policies.html",
        site=site,
        form=form,
        versions=versions,
        stale_counts=stale_counts,
        stale_now=editing.stale_decision_count(site, now_utc()),
    ), status


# --- API keys -------------------------------------------------------------------------


def _site_keys(site: Site) -> list[ApiKey]:
    return db.session.scalars(
        select(ApiKey).where(ApiKey.site_id == site.id).order_by(ApiKey.created_at.desc())
    ).all()


@bp.route("/sites/<site_key>/keys", methods=["GET", "POST"])
@roles.requires_role(*roles.SETUP_READERS, post=("editor",))
def api_keys(site_key: str):
    """List a site's API keys and issue a new one, whose secret is shown once."""
    site = _site_or_404(site_key)
    form = KeyForm()
    secret = None
    status = 200
    if form.validate_on_submit():
        try:
            _, secret = keys.issue_key(site, form.name.data.strip(), form.scopes.data)
        except InvalidRequest as error:
            status = _attach(form, error)
    elif form.is_submitted():
        status = _refused(form)
    return (
        render_template(
            "admin/keys.html",
            site=site,
            form=form,
            secret=secret,
            api_keys=_site_keys(site),
        ),
        status,
        NO_STORE,
    )


@bp.post("/sites/<site_key>/keys/<prefix>/revoke")
@roles.requires_role("editor")
def revoke_key(site_key: str, prefix: str):
    """Revoke an API key: every call with it is refused from now on."""
    site = _site_or_404(site_key)
    _require_valid(ActionForm())
    if not any(api_key.prefix == prefix for api_key in _site_keys(site)):
        abort(404, description=f"No key {prefix!r} on this site.")
    keys.revoke_key(prefix)
    flash(f"Key {prefix} revoked.")
    return redirect(url_for("admin.api_keys", site_key=site.key))


# --- consent rates --------------------------------------------------------------------


def _rates_from_query(site: Site) -> tuple[RatesForm, rates.ConsentRates | None]:
    form = RatesForm(request.args)
    if not form.validate():
        return form, None
    default_start, default_end = rates.default_range(now_utc().date())
    end = form.end.data or default_end
    start = form.start.data or min(default_start, end)
    if (end - start).days + 1 > rates.MAX_RANGE_DAYS:
        form.end.errors.append(f"Choose at most {rates.MAX_RANGE_DAYS} days.")
        return form, None
    return form, rates.consent_rates(site, start, end, form.period.data)


@bp.get("/sites/<site_key>/rates")
@roles.requires_role(*roles.RECORD_READERS)
def consent_rates(site_key: str):
    """Show banners shown, interaction rate and share granted per purpose over time."""
    site = _site_or_404(site_key)
    form, site_rates = _rates_from_query(site)
    chart = rates.share_chart(site_rates) if site_rates else None
    return render_template(
        "admin/rates.html", site=site, form=form, rates=site_rates, chart=chart
    ), 200 if site_rates else 422


@bp.get("/sites/<site_key>/rates.csv")
@roles.requires_role(*roles.RECORD_READERS)
def consent_rates_csv(site_key: str):
    """Download the consent rates of the chosen range as CSV."""
    site = _site_or_404(site_key)
    form, site_rates = _rates_from_query(site)
    if site_rates is None:
        abort(
            422,
            description=" ".join(
                f"{form[name].label.text}: {' '.join(errors)}"
                for name, errors in form.errors.items()
            ),
        )
    name = f"consent-rates-{site.key}-{site_rates.start}-{site_rates.end}.csv"
    return Response(
        rates.rates_csv(site_rates),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


# --- the record log and verification -------------------------------------------------


@bp.get("/sites/<site_key>/records")
@roles.requires_role(*roles.RECORD_READERS)
def record_log(site_key: str):
    """Browse a site's records with filters, newest first, with the chain's status."""
    site = _site_or_404(site_key)
    form = RecordFilterForm(request.args)
    form.purpose.choices = [ANY, *(p.key for p in site.purposes)]
    page = None
    if form.validate():
        filters = records.RecordFilters(
            **{
                name: form[name].data or ("" if name not in ("start", "end") else None)
                for name in ("purpose", "decision", "source", "subject", "start", "end")
            }
        )
        page = records.record_page(
            site,
            filters,
            before=request.args.get("before", type=int),
            after=request.args.get("after", type=int),
        )
    query = {k: v for k, v in request.args.items() if k not in ("before", "after") and v}
    return render_template(
        "admin/records.html",
        site=site,
        form=form,
        page=page,
        query=query,
        run=latest_verification(site),
    ), 200 if page else 422


@bp.post("/sites/<site_key>/verify")
@roles.requires_role("editor", *roles.RECORD_READERS)
def verify(site_key: str):
    """Verify the site's chain now and keep the result."""
    site = _site_or_404(site_key)
    _require_valid(ActionForm())
    run = record_verification(site, verify_chain(site), auth.actor())
    if run.is_intact:
        flash(f"Chain intact: {run.records_checked} records checked.")
    else:
        flash(f"Chain BROKEN at record #{run.first_bad_sequence}: {run.problem}.", "error")
    if request.form.get("next") is None and roles.has_role(g.admin, site, *roles.RECORD_READERS):
        return redirect(url_for("admin.record_log", site_key=site.key))
    return redirect(auth.safe_next(request.form.get("next")))


# --- people ---------------------------------------------------------------------------


def _person_or_404(site: Site, form: PersonForm):
    subject = editing.find_subject_by_pseudonym(site, form.pseudonym.data)
    if subject is None:
        abort(404, description="No such person on this site.")
    return subject


@bp.route("/sites/<site_key>/people", methods=["GET", "POST"])
@roles.requires_role("rights", "auditor")
def people(site_key: str):
    """Look a person up by email, site user id or visitor id; the view is logged."""
    site = _site_or_404(site_key)
    form = LookupForm()
    if not form.validate_on_submit():
        status = _refused(form) if form.is_submitted() else 200
        return render_template("admin/people.html", site=site, form=form), status
    try:
        subject = rights.find_subject(site, **{form.kind.data: form.value.data})
    except InvalidRequest as error:
        form.value.errors.append(error.message)
        return render_template("admin/people.html", site=site, form=form), 422
    log_access(
        site,
        auth.actor(),
        "lookup",
        subject.pseudonym if subject else None,
        details={"by": form.kind.data, "found": subject is not None},
    )
    if subject is None:
        return render_template("admin/people.html", site=site, form=form, not_found=True)
    return _person_page(site, subject)


def _person_page(site: Site, subject, export_form: ExportForm | None = None):
    """The person's identifiers, state and history (the caller has logged the view)."""
    return (
        render_template(
            "admin/person.html",
            site=site,
            subject=subject,
            identifiers=editing.identifiers_of(subject),
            state=describe_state(site, subject),
            history=rights.subject_history(site, subject),
            export_form=export_form or ExportForm(pseudonym=subject.pseudonym),
            erase_form=PersonForm(pseudonym=subject.pseudonym),
        ),
        200,
        NO_STORE,
    )


@bp.post("/sites/<site_key>/people/export")
@roles.requires_role("rights")
def export_person(site_key: str):
    """Download everything held about a person as JSON or CSV; the export is logged."""
    site = _site_or_404(site_key)
    form = ExportForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors or form.pseudonym.errors or form.format.errors:
            abort(400, description="This form has expired; go back and try again.")
        # Only the reason is missing: show the page again with the message beside it.
        # Answered 200 on purpose: the page shows the person again, and the access log
        # entry for that view must be committed.
        subject = _person_or_404(site, form)
        log_access(site, auth.actor(), "lookup", subject.pseudonym, details={"by": "pseudonym"})
        return _person_page(site, subject, form)
    subject = _person_or_404(site, form)
    export = rights.export_subject(site, subject, auth.actor(), form.reason.data)
    name = f"subject-{site.key}-{subject.pseudonym}"
    if form.format.data == "csv":
        body, mimetype, name = rights.export_as_csv(export), "text/csv", f"{name}.csv"
    else:
        body = json.dumps(export, indent=2, ensure_ascii=False)
        mimetype, name = "application/json", f"{name}.json"
    return Response(
        body,
        mimetype=mimetype,
        headers={
            **NO_STORE,
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


@bp.post("/sites/<site_key>/people/erase")
@roles.requires_role("rights")
def erase_person(site_key: str):
    """Ask to confirm an erasure, then erase: identifiers gone, history kept."""
    site = _site_or_404(site_key)
    if request.form.get("step") == "ask":
        form = PersonForm()
        _require_valid(form)
        subject = _person_or_404(site, form)
        return (
            render_template(
                "admin/erase.html",
                site=site,
                subject=subject,
                form=EraseForm(pseudonym=subject.pseudonym),
            ),
            200,
            NO_STORE,
        )
    form = EraseForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors or form.pseudonym.errors:
            abort(400, description="This form has expired; go back and try again.")
        subject = _person_or_404(site, form)
        return (
            render_template("admin/erase.html", site=site, subject=subject, form=form),
            422,
            NO_STORE,
        )
    subject = _person_or_404(site, form)
    record = rights.erase_subject(site, subject, auth.actor(), form.reason.data)
    if record is None:
        flash(f"Subject {subject.pseudonym} was already erased.")
    else:
        flash(f"Subject {subject.pseudonym} erased; erasure record #{record.sequence}.")
    return redirect(url_for("admin.people", site_key=site.key))
