"""The admin's forms. Every FlaskForm carries a CSRF token unless it only filters (GET)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

from flask_wtf import FlaskForm
from marshmallow import Schema, ValidationError, fields, validate
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
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
    StopValidation,
)
from wtforms.validators import ValidationError as FieldError
from wtforms.widgets import CheckboxInput, ListWidget, TextInput

from consent import validation
from consent.models import API_SCOPES, MAX_LIFETIME_DAYS, PURPOSE_KINDS, RECORD_SOURCES
from consent.schemas import LANGUAGE, CookieSchema, ServiceSchema
from consent.sites import CONSENT_MODE_SIGNALS

SITE_KEY_PATTERN = validation.SITE_KEY
PURPOSE_KEY_PATTERN = validation.PURPOSE_KEY
LANGUAGE_PATTERN = validation.LANGUAGE_TAG
#: The banner texts a site may override (the keys of consent.sites.DEFAULT_TEXTS["en"]).
TEXT_FIELDS = fields.String(validate=validate.Length(max=2000))


#: The empty choice of a filter.
ANY = SelectChoice("", "any")


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class JSONField(TextAreaField):
    """A textarea holding JSON, checked against a marshmallow schema (or field)."""

    def __init__(self, label=None, validators=None, *, schema, empty, **kwargs):
        super().__init__(label, validators, **kwargs)
        self.schema = schema
        self.empty = empty
        self.parse_error = None

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return json.dumps(
            self.data if self.data is not None else self.empty, indent=2, ensure_ascii=False
        )

    def process_formdata(self, valuelist):
        if not valuelist:
            self.data = self.empty
            return
        text = valuelist[0].strip()
        try:
            self.data = json.loads(text) if text else self.empty
        except json.JSONDecodeError as error:
            self.data = None
            raise FieldError(
                f"This is not valid JSON: {error.msg} (line {error.lineno})."
            ) from None

    def pre_validate(self, form):
        if self.process_errors:
            raise StopValidation()  # the JSON did not parse; that message says it all
        try:
            self.data = (
                self.schema.load(self.data)
                if isinstance(self.schema, Schema)
                else self.schema.deserialize(self.data)
            )
        except ValidationError as error:
            # Stop here: the field's own validators expect data the schema accepted.
            raise StopValidation(_describe(error.messages)) from None


def _describe(messages, path: str = "") -> str:
    """Flatten marshmallow's nested messages into one readable sentence."""
    if isinstance(messages, dict):
        return " ".join(_describe(value, path + _step(key)) for key, value in messages.items())
    if isinstance(messages, list):
        return " ".join(_describe(message, path) for message in messages)
    return f"{path}{messages}"


def _step(key) -> str:
    if key == "value":  # marshmallow's Dict nests a "value" level that means nothing here
        return ""
    return f"item {key + 1}: " if isinstance(key, int) else f"{key}: "


class TranslationSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=2000))


LANGUAGE_KEY = fields.String(validate=LANGUAGE)
TRANSLATIONS = fields.Dict(
    keys=LANGUAGE_KEY,
    values=fields.Nested(TranslationSchema),
)
TEXTS = fields.Dict(
    keys=LANGUAGE_KEY,
    values=fields.Dict(keys=fields.String(), values=TEXT_FIELDS),
)


class ActionForm(FlaskForm):
    """A button that changes something: it needs the CSRF token and nothing else."""


class SignInForm(FlaskForm):
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


class WordsField(ListField):
    """A list typed on one line, separated by spaces."""

    widget = TextInput()
    separator = " "


class SiteForm(FlaskForm):
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
    texts = JSONField(
        "Banner texts (JSON)",
        schema=TEXTS,
        empty={},
        description='Overrides per language, e.g. {"en": {"title": "Cookies?"}}.',
    )

    def validate_key(self, field):
        if not validation.is_site_key(field.data):
            raise FieldError(validation.MESSAGES["site_key"])

    def validate_origins(self, field):
        bad = [origin for origin in field.data if not validation.is_origin(origin)]
        if bad:
            raise FieldError(
                " ".join(f"{origin!r} {validation.MESSAGES['origin']}" for origin in bad)
            )

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


class PurposeForm(FlaskForm):
    key = StringField(
        "Key",
        [DataRequired(), Length(max=64)],
        description="What page code asks for, e.g. analytics. Lower-case, digits, - and _.",
    )
    kind = RadioField("Kind", choices=list(PURPOSE_KINDS), default="cookie")
    is_required = BooleanField("Required (strictly necessary: always on, cannot be refused)")
    translations = JSONField(
        "Title and description per language (JSON)",
        schema=TRANSLATIONS,
        empty={},
        description='{"en": {"title": "Analytics", "description": "..."}}',
    )
    consent_mode = MultiCheckboxField(
        "Google Consent Mode signals", choices=list(CONSENT_MODE_SIGNALS)
    )
    cookies = JSONField(
        "Cookies (JSON)",
        schema=CookieSchema(many=True),
        empty=[],
        description='[{"name": "_pk_", "is_prefix": true, "provider": "Matomo", '
        '"duration": "13 months", "description": "Visit statistics."}]',
    )
    services = JSONField(
        "Services and vendors (JSON)",
        schema=ServiceSchema(many=True),
        empty=[],
        description='[{"key": "matomo", "name": "Matomo", "provider": "...", "cookies": []}]',
    )

    def validate_key(self, field):
        if not validation.is_purpose_key(field.data):
            raise FieldError(validation.MESSAGES["purpose_key"])

    def validate_services(self, field):
        keys = [service["key"] for service in field.data or []]
        if len(set(keys)) != len(keys):
            raise FieldError("Each service key may appear only once.")


class PolicyForm(FlaskForm):
    version = StringField(
        "Version",
        [DataRequired(), Length(max=64)],
        description='The label people see, e.g. "2026-11-01" or "v3".',
    )
    url = StringField("Policy URL", [Optional(), Length(max=validation.MAX_URL_LENGTH)])
    published_at = DateTimeLocalField(
        "Published at (UTC)", [Optional()], description="Leave empty for now."
    )
    is_material = BooleanField(
        "Material change: earlier decisions become stale and the banner asks again"
    )

    def validate_url(self, field):
        if field.data and not validation.is_web_url(field.data):
            raise FieldError(validation.MESSAGES["url"])

    def validate_published_at(self, field):
        if field.data is not None and field.data.replace(tzinfo=UTC) > datetime.now(UTC):
            raise FieldError("A version cannot be published in the future.")


class KeyForm(FlaskForm):
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


class LookupForm(FlaskForm):
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


class ExportForm(PersonForm):
    format = SelectField(
        "Format", choices=[SelectChoice("json", "JSON"), SelectChoice("csv", "CSV")], default="json"
    )


class EraseForm(PersonForm):
    confirmed = BooleanField(
        "I understand: this person's email and user id are removed for good.",
        [DataRequired("Tick the box to confirm the erasure.")],
    )


def utc_datetime(value: datetime | None) -> datetime | None:
    """A naive value typed into a form, read as UTC."""
    return value.replace(tzinfo=UTC) if value is not None else None


def start_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class PasswordChangeForm(FlaskForm):
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


class GrantForm(FlaskForm):
    name = SelectField("Admin", choices=[])
    role = SelectField("Role", choices=[])
    site = SelectField("Site", choices=[])
