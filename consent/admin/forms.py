"""The admin's forms. Every FlaskForm carries a CSRF token unless it only filters (GET)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

from flask_wtf import FlaskForm
from marshmallow import ValidationError
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
)
from wtforms.validators import ValidationError as FieldError
from wtforms.widgets import CheckboxInput, ListWidget, TextInput

from consent import regions, validation
from consent.cookiedb import look_up_cookie
from consent.errors import InvalidRequest
from consent.identifiers import is_storable_text
from consent.models import (
    API_SCOPES,
    MAX_LIFETIME_DAYS,
    PURPOSE_KINDS,
    RECORD_SOURCES,
    WEBHOOK_EVENTS,
)
from consent.schemas import CookieSchema
from consent.sites import CONSENT_MODE_SIGNALS, DEFAULT_TEXTS

SITE_KEY_PATTERN = validation.SITE_KEY
PURPOSE_KEY_PATTERN = validation.PURPOSE_KEY
LANGUAGE_PATTERN = validation.LANGUAGE_TAG
#: The empty choice of a filter.
ANY = SelectChoice("", "any")


class AdminForm(FlaskForm):
    """A form whose every text the databases can store (PostgreSQL refuses a NUL)."""

    def validate(self, extra_validators=None) -> bool:
        is_valid = super().validate(extra_validators)
        for field in _text_fields(self):
            if isinstance(field.data, str) and not is_storable_text(field.data):
                field.errors = [*field.errors, validation.MESSAGES["unstorable"]]
                is_valid = False
        return is_valid


def _text_fields(form):
    for field in form:
        if isinstance(field, FieldList):
            for entry in field:
                yield from _text_fields(entry.form)
        elif isinstance(field, FormField):
            yield from _text_fields(field.form)
        else:
            yield field


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ActionForm(FlaskForm):
    """A button that changes something: it needs the CSRF token and nothing else."""


class SignInForm(AdminForm):
    name = StringField(
        "Name",
        [DataRequired(), Length(max=80)],
        render_kw={"autocomplete": "username", "autocapitalize": "none"},
    )
    password = PasswordField(
        "Password",
        [DataRequired(), Length(max=1000)],
        render_kw={"autocomplete": "current-password"},
    )


class ListField(TextAreaField):
    """A list of values typed one per line (or space-separated); renders back the same way."""

    separator = "\n"

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return self.separator.join(self.data or [])

    def process_formdata(self, valuelist):
        text = valuelist[0] if valuelist else ""
        self.data = [item for item in re.split(r"[\s,]+", text) if item]


class LinesField(ListField):
    """A list typed one item per line; an item may hold spaces and commas."""

    def process_formdata(self, valuelist):
        text = valuelist[0] if valuelist else ""
        self.data = [line.strip() for line in text.splitlines() if line.strip()]


class WordsField(ListField):
    """A list typed on one line, separated by spaces."""

    widget = TextInput()
    separator = " "


class TextRow(Form):
    """One banner text of one language, replacing the default."""

    language = StringField("Language", [Length(max=35)])
    name = SelectField("Text", choices=list(DEFAULT_TEXTS["en"]))
    text = TextAreaField("Replaced by", [Length(max=2000)])

    def is_blank(self) -> bool:
        return not (self.language.data or self.text.data)

    def validate_language(self, field):
        if not self.is_blank() and not validation.is_language_tag(field.data or ""):
            raise FieldError("Use a language code like en or pt-BR.")


class RowsForm(AdminForm):
    """A form with lists of rows that buttons add, remove (and look up) without JavaScript."""

    #: The names of the row lists a button may change.
    row_lists: tuple[str, ...] = ()

    def apply_row_action(self, action: str) -> str | None:
        """Add, remove or look up a row as a button asked; return a note for the page."""
        verb, _, target = action.partition("-")
        name, _, index = target.partition("-")
        if name not in self.row_lists:
            return None
        rows = self[name]
        if verb == "add":
            rows.append_entry()
            return None
        row = next((entry for entry in rows.entries if entry.name == f"{name}-{index}"), None)
        if row is None:
            return None
        if verb == "remove":
            rows.entries.remove(row)
            return None
        if verb == "lookup" and name == "cookies":
            return _look_up_into(row.form)
        return None


#: The site form's fields that make up ``Site.appearance``.
APPEARANCE_FIELDS = ("layout", "theme", "settings_button", "button_side")


class SiteForm(RowsForm):
    key = StringField(
        "Site key",
        [DataRequired("Give the site a key, like shop.")],
        description="Public; used in the embed snippet. Lower-case letters, digits, - and _.",
    )
    name = StringField("Name", [DataRequired("Give the site a name."), Length(max=200)])
    origins = ListField(
        "Allowed origins",
        description="One per line, like https://shop.example.com",
    )
    languages = WordsField(
        "Languages",
        description="Language codes separated by spaces; the first is the default (en fr).",
    )
    lifetime_days = IntegerField(
        "Consent lifetime (days)",
        [InputRequired(), NumberRange(1, MAX_LIFETIME_DAYS)],
        description=f"How long a choice stands before the banner asks again; at most "
        f"{MAX_LIFETIME_DAYS} days (13 months).",
    )
    retention_days = IntegerField(
        "Record retention (days)",
        [InputRequired(), NumberRange(1, 100 * 365)],
        description="How long records are kept; at least the consent lifetime.",
    )
    controller_name = StringField("Controller name", [Optional(), Length(max=200)])
    controller_contact = StringField("Controller contact", [Optional(), Length(max=200)])
    logo_url = StringField(
        "Logo URL",
        [Optional()],
        description="Shown on the email preference centre, e.g. https://shop.example/logo.png",
    )
    texts = FieldList(FormField(TextRow), label="Banner texts")
    layout = SelectField(
        "Banner layout",
        choices=[
            SelectChoice("box", "box at the bottom"),
            SelectChoice("bar", "bar along the bottom"),
            SelectChoice("modal", "box in the middle"),
        ],
        default="box",
    )
    theme = SelectField(
        "Colours",
        choices=[
            SelectChoice("auto", "follow the visitor's system (light or dark)"),
            SelectChoice("light", "light"),
            SelectChoice("dark", "dark"),
        ],
        default="auto",
    )
    settings_button = BooleanField(
        "Show a floating “cookie settings” button once a visitor has chosen", default=True
    )
    button_side = SelectField(
        "Button side",
        choices=[SelectChoice("left", "bottom left"), SelectChoice("right", "bottom right")],
        default="left",
    )
    region_rules = LinesField(
        "Region rules",
        description="One rule per line, REGIONS=MODE, the first that names a visitor's "
        "region applies: ISO codes (FR, US, US-CA), EU, EEA, UK, US-PRIVACY-STATES or * "
        "(any other region); modes opt-in, opt-out, notice. Anywhere no rule names, and "
        "for a visitor whose region is unknown: opt-in. The EEA, the UK and Switzerland "
        "always stay opt-in.",
    )

    row_lists = ("texts",)

    def apply_row_action(self, action: str) -> str | None:
        """A preset button adds its rule (at the end, once); other buttons change rows."""
        verb, _, name = action.partition("-")
        if verb != "preset" or name not in regions.PRESETS:
            return super().apply_row_action(action)
        rule = regions.PRESETS[name]
        lines = [line for line in self.region_rules.data if line != rule] + [rule]
        self.region_rules.data = lines
        self.region_rules.raw_data = ["\n".join(lines)]
        return None

    def appearance_value(self) -> dict:
        return {name: self[name].data for name in APPEARANCE_FIELDS}

    @staticmethod
    def text_rows(texts: dict[str, dict[str, str]]) -> list[dict]:
        """Stored texts ({language: {name: text}}) as the form's rows."""
        return [
            {"language": language, "name": name, "text": text}
            for language, overrides in texts.items()
            for name, text in overrides.items()
        ]

    def validate_texts(self, field):
        pairs = [(row.form.language.data, row.form.name.data) for row in field]
        pairs = [pair for pair, row in zip(pairs, field, strict=True) if not row.form.is_blank()]
        if len(set(pairs)) != len(pairs):
            raise FieldError("Each text may be replaced once per language.")

    def texts_value(self) -> dict[str, dict[str, str]]:
        texts: dict[str, dict[str, str]] = {}
        for row in (entry.form for entry in self.texts):
            if not row.is_blank():
                texts.setdefault(row.language.data, {})[row.name.data] = row.text.data
        return texts

    def validate_key(self, field):
        if not validation.is_site_key(field.data):
            raise FieldError(validation.MESSAGES["site_key"])

    def validate_region_rules(self, field):
        try:
            regions.parse_rules(field.data)
        except InvalidRequest as error:
            raise FieldError(error.message) from None

    def validate_origins(self, field):
        bad = [origin for origin in field.data if not validation.is_origin(origin)]
        if bad:
            raise FieldError(
                " ".join(f"{origin!r} {validation.MESSAGES['origin']}" for origin in bad)
            )

    def validate_logo_url(self, field):
        if field.data and not validation.is_web_url(field.data):
            raise FieldError(validation.MESSAGES["url"])

    def validate_languages(self, field):
        if not field.data:
            raise FieldError("Give at least one language code, like en.")
        bad = [language for language in field.data if not validation.is_language_tag(language)]
        if bad:
            raise FieldError(
                " ".join(f"{language!r} {validation.MESSAGES['language']}" for language in bad)
            )

    def validate_retention_days(self, field):
        if (
            self.lifetime_days.data
            and field.data is not None
            and field.data < self.lifetime_days.data
        ):
            raise FieldError("Records must be kept at least as long as a choice stands.")


class TranslationRow(Form):
    """One language's title and description of a purpose."""

    language = StringField("Language", [Length(max=35)])
    title = StringField("Title", [Length(max=200)])
    description = TextAreaField("Description", [Optional(), Length(max=2000)])

    def is_blank(self) -> bool:
        return not any((self.language.data, self.title.data, self.description.data))

    def validate_language(self, field):
        if self.is_blank():
            return
        if not validation.is_language_tag(field.data or ""):
            raise FieldError("Use a language code like en or pt-BR.")

    def validate_title(self, field):
        if not self.is_blank() and not (field.data or "").strip():
            raise FieldError("Give a title in this language.")


class CookieRow(Form):
    """One cookie (or prefix of cookie names) a purpose sets."""

    name = StringField("Name or prefix", [Length(max=200)])
    is_prefix = BooleanField("Prefix")
    provider = StringField("Provider", [Optional(), Length(max=200)])
    duration = StringField("Duration", [Optional(), Length(max=200)])
    description = StringField("Purpose", [Optional(), Length(max=2000)])
    #: Kept as stored (set through the API or CLI); the form does not edit them.
    domain = HiddenField()
    path = HiddenField()

    def is_blank(self) -> bool:
        return not any(
            (self.name.data, self.provider.data, self.duration.data, self.description.data)
        )

    def validate_name(self, field):
        if not self.is_blank() and not (field.data or "").strip():
            raise FieldError("Give the cookie's name, or the start of its names.")

    def value(self) -> dict:
        cookie = {"name": self.name.data.strip(), "is_prefix": bool(self.is_prefix.data)}
        for name in ("provider", "duration", "description", "domain", "path"):
            if self[name].data:
                cookie[name] = self[name].data.strip()
        return cookie


class ServiceRow(Form):
    """One service or vendor behind a purpose."""

    key = StringField("Key", [Length(max=64)])
    name = StringField("Title", [Optional(), Length(max=200)])
    provider = StringField("Provider", [Optional(), Length(max=200)])
    policy_url = StringField("Policy URL", [Optional(), Length(max=validation.MAX_URL_LENGTH)])
    #: The service's own cookies, kept as stored (JSON); set through the API or CLI.
    cookies = HiddenField()

    def is_blank(self) -> bool:
        return not any((self.key.data, self.name.data, self.provider.data, self.policy_url.data))

    def validate_key(self, field):
        if not self.is_blank() and not validation.is_purpose_key(field.data or ""):
            raise FieldError(validation.MESSAGES["purpose_key"])

    def validate_policy_url(self, field):
        if field.data and not validation.is_web_url(field.data):
            raise FieldError(validation.MESSAGES["url"])

    def validate_cookies(self, field):
        try:
            cookies = json.loads(field.data) if field.data else []
            CookieSchema(many=True).load(cookies)
        except (json.JSONDecodeError, ValidationError):
            raise FieldError("The service's stored cookies are unreadable.") from None

    def value(self) -> dict:
        return {
            "key": self.key.data,
            "name": (self.name.data or "").strip(),
            "provider": (self.provider.data or "").strip(),
            "policy_url": self.policy_url.data or None,
            "cookies": json.loads(self.cookies.data) if self.cookies.data else [],
        }


class PurposeForm(RowsForm):
    row_lists = ("translations", "cookies", "services")

    key = StringField(
        "Key",
        [DataRequired("Give the purpose a key, like analytics.")],
        description="What page code asks for, e.g. analytics. Lower-case, digits, - and _.",
    )
    kind = RadioField("Kind", choices=list(PURPOSE_KINDS), default="cookie")
    is_required = BooleanField("Required (strictly necessary: always on, cannot be refused)")
    is_opt_out_default = BooleanField(
        "Allowed until the person opts out, where a region rule is opt-out or notice",
        description="Only outside the EEA, the UK and Switzerland, and never for advertising "
        "when the browser sends Global Privacy Control.",
    )
    is_notice_only = BooleanField("Allowed with a notice, where a region rule is notice")
    translations = FieldList(FormField(TranslationRow), label="Title and description")
    consent_mode = MultiCheckboxField(
        "Google Consent Mode signals", choices=list(CONSENT_MODE_SIGNALS)
    )
    cookies = FieldList(FormField(CookieRow), label="Cookies")
    services = FieldList(FormField(ServiceRow), label="Services and vendors")

    @classmethod
    def from_purpose(cls, purpose, languages: list[str]) -> PurposeForm:
        """The form filled from a stored purpose (or, for a new one, a row per language)."""
        if purpose is None:
            return cls(data={"translations": [{"language": lang} for lang in languages]})
        return cls(
            data={
                "kind": purpose.kind,
                "is_required": purpose.is_required,
                "is_opt_out_default": purpose.is_opt_out_default,
                "is_notice_only": purpose.is_notice_only,
                "consent_mode": list(purpose.consent_mode or []),
                "translations": [
                    {"language": language, **texts}
                    for language, texts in (purpose.translations or {}).items()
                ],
                "cookies": [
                    {**cookie, "domain": cookie.get("domain"), "path": cookie.get("path")}
                    for cookie in purpose.cookies or []
                ],
                "services": [
                    {**service, "cookies": json.dumps(service.get("cookies") or [])}
                    for service in purpose.services or []
                ],
            }
        )

    def validate_translations(self, field):
        languages = [row.form.language.data for row in field if not row.form.is_blank()]
        if len(set(languages)) != len(languages):
            raise FieldError("Each language may appear only once.")

    def validate_key(self, field):
        if not validation.is_purpose_key(field.data):
            raise FieldError(validation.MESSAGES["purpose_key"])

    def validate_services(self, field):
        keys = [row.form.key.data for row in field if not row.form.is_blank()]
        if len(set(keys)) != len(keys):
            raise FieldError("Each service key may appear only once.")

    def purpose_values(self) -> dict:
        """What the rows say, in the shape ``consent.sites.set_purpose`` takes."""
        translations = {}
        for row in (entry.form for entry in self.translations):
            if row.is_blank():
                continue
            texts = {"title": row.title.data.strip()}
            if row.description.data:
                texts["description"] = row.description.data.strip()
            translations[row.language.data] = texts
        return {
            "kind": self.kind.data,
            "is_required": self.is_required.data,
            "is_opt_out_default": self.is_opt_out_default.data,
            "is_notice_only": self.is_notice_only.data,
            "translations": translations,
            "consent_mode": self.consent_mode.data,
            "cookies": [row.form.value() for row in self.cookies if not row.form.is_blank()],
            "services": [row.form.value() for row in self.services if not row.form.is_blank()],
        }


def _look_up_into(row: CookieRow) -> str:
    """Fill a cookie row from the Open Cookie Database; say what was found."""
    typed = (row.name.data or "").strip()
    known = look_up_cookie(typed) if typed else None
    if known is None:
        return f"{typed!r} is not in the Open Cookie Database; fill the row in by hand."
    row.name.data = known.name
    row.is_prefix.data = known.is_prefix
    row.provider.data = known.controller or known.platform
    row.duration.data = known.retention
    row.description.data = known.description
    return (
        f"{known.name!r} ({known.platform}) found in the Open Cookie Database: "
        f"category {known.category}, kept {known.retention}."
    )


class PolicyForm(AdminForm):
    version = StringField(
        "Version",
        [DataRequired(), Length(max=64)],
        description='The label people see, e.g. "2026-11-01" or "v3".',
    )
    url = StringField("Policy URL", [Optional(), Length(max=validation.MAX_URL_LENGTH)])
    published_at = DateTimeLocalField(
        "Takes effect at (UTC)",
        [Optional()],
        description="Leave empty for now. A later time schedules the version: the banner "
        "announces it and, for a material change, asks again exactly then.",
    )
    is_material = BooleanField(
        "Material change: earlier decisions become stale and the banner asks again"
    )

    def validate_url(self, field):
        if field.data and not validation.is_web_url(field.data):
            raise FieldError(validation.MESSAGES["url"])


class KeyForm(AdminForm):
    name = StringField(
        "Name",
        [DataRequired(), Length(max=200)],
        description="Who or what uses it, e.g. newsletter backend.",
    )
    scopes = MultiCheckboxField(
        "Scopes",
        [DataRequired("Choose at least one scope.")],
        choices=list(API_SCOPES),
    )


class DateRangeForm(FlaskForm):
    """A date range read from the query string; filters change nothing, so no CSRF."""

    class Meta:
        csrf = False

    start = DateField("From", [Optional()])
    end = DateField("To", [Optional()])

    def validate_end(self, field):
        if self.start.data and field.data and field.data < self.start.data:
            raise FieldError("The end comes before the start.")


class RatesForm(DateRangeForm):
    period = SelectField("Per", choices=["day", "week"], default="day")


class RecordFilterForm(DateRangeForm):
    purpose = SelectField("Purpose", choices=[ANY], default="")
    decision = SelectField(
        "Decision",
        choices=[ANY, "granted", "denied"],
        default="",
    )
    source = SelectField("Source", choices=[ANY, *RECORD_SOURCES], default="")
    subject = StringField("Subject pseudonym", [Optional(), Length(max=40)])


class LookupForm(AdminForm):
    kind = RadioField(
        "Find by",
        choices=[
            SelectChoice("email", "email"),
            SelectChoice("user_id", "site user id"),
            SelectChoice("visitor_id", "visitor id"),
        ],
        default="email",
    )
    value = StringField("Value", [DataRequired(), Length(max=320)])


class PersonForm(FlaskForm):
    pseudonym = HiddenField(validators=[DataRequired(), Length(max=40)])


def reason_field() -> StringField:
    """Why an export or erasure is done: kept with it in the access log."""
    return StringField(
        "Reason or ticket",
        [
            DataRequired("Say why (a ticket number will do): it is kept in the access log."),
            Length(max=500),
        ],
    )


class ExportForm(PersonForm):
    format = SelectField(
        "Format", choices=[SelectChoice("json", "JSON"), SelectChoice("csv", "CSV")], default="json"
    )
    reason = reason_field()


class EraseForm(PersonForm):
    reason = reason_field()
    confirmed = BooleanField(
        "I understand: this person's email and user id are removed for good.",
        [DataRequired("Tick the box to confirm the erasure.")],
    )


def utc_datetime(value: datetime | None) -> datetime | None:
    """A naive value typed into a form, read as UTC."""
    return value.replace(tzinfo=UTC) if value is not None else None


def start_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class ScanForm(FlaskForm):
    urls = TextAreaField(
        "Start from these pages (one URL per line)",
        [DataRequired()],
        description="On the site's allowed origins; same-site links are followed.",
    )
    pages = IntegerField("Most pages", [InputRequired(), NumberRange(1, 200)], default=10)

    @property
    def url_list(self) -> list[str]:
        return [line.strip() for line in (self.urls.data or "").splitlines() if line.strip()]


class RightsRequestForm(FlaskForm):
    """A rights request that arrived by email, registered by hand."""

    kind = SelectField(
        "Right asked for",
        choices=[
            SelectChoice("access", "access"),
            SelectChoice("export", "export (portability)"),
            SelectChoice("correction", "correction"),
            SelectChoice("erasure", "erasure"),
            SelectChoice("objection", "objection to marketing"),
        ],
        default="access",
    )
    email = StringField(
        "Sender's email",
        [DataRequired("The verification link goes to this address."), Length(max=254)],
    )
    message = TextAreaField("What they asked", [Length(max=2000)])


class RightsActionForm(FlaskForm):
    """The next step of a request: extend, refuse or complete it."""

    action = RadioField(
        "Next step",
        choices=[
            SelectChoice("complete", "complete it (export link, erasure or objection)"),
            SelectChoice("extend", "extend to three months from receipt"),
            SelectChoice("refuse", "refuse it"),
        ],
        default="complete",
    )
    reason = StringField(
        "Reason told to the person (to extend or refuse)", [Optional(), Length(max=2000)]
    )


class AccessLogFilterForm(DateRangeForm):
    """What the access log is narrowed to; empty fields do not filter."""

    site = SelectField("Site", choices=[ANY], default="")
    actor = StringField("Actor", [Optional(), Length(max=200)])
    action = SelectField("Action", choices=[ANY], default="")
    subject = StringField("Subject pseudonym", [Optional(), Length(max=40)])


class WebhookForm(FlaskForm):
    url = StringField(
        "Endpoint URL",
        [DataRequired(), Length(max=2000)],
        description="http:// or https://; receives a signed POST per event.",
    )
    events = MultiCheckboxField(
        "Events", [DataRequired("Choose at least one event.")], choices=list(WEBHOOK_EVENTS)
    )
    include_email = BooleanField("Include the person's email in payloads")


class PasswordChangeForm(AdminForm):
    current = PasswordField(
        "Current password", [DataRequired()], render_kw={"autocomplete": "current-password"}
    )
    new = PasswordField(
        "New password",
        [DataRequired(), Length(min=12, max=1000, message="Use at least 12 characters.")],
        render_kw={"autocomplete": "new-password"},
    )
    repeat = PasswordField(
        "New password again", [DataRequired()], render_kw={"autocomplete": "new-password"}
    )

    def validate_repeat(self, field):
        if field.data != self.new.data:
            raise FieldError("The two new passwords differ.")


class GrantForm(AdminForm):
    name = SelectField("Admin", choices=[])
    role = SelectField("Role", choices=[])
    site = SelectField("Site", choices=[])
