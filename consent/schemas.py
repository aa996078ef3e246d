"""marshmallow schemas: ``<Thing>Schema`` for output, ``<Thing>Args`` for input.

The same classes validate requests and generate the OpenAPI document, so the two
cannot drift apart.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from consent import regions, validation
from consent.decision import Reason
from consent.identifiers import is_storable_text
from consent.models import RECORD_SOURCES, RIGHTS_KINDS

#: Purpose and service keys, by the one rule in consent.validation.
KEY = validate.Regexp(validation.PURPOSE_KEY, error=validation.MESSAGES["purpose_key"])
LANGUAGE = validate.Regexp(
    validation.LANGUAGE_TAG, error="{input!r} " + validation.MESSAGES["language"]
)


def web_url(value) -> bool:
    """Refuse anything but an http(s) URL (never javascript: or data:)."""
    if value is not None and not validation.is_web_url(value):
        raise ma.ValidationError(validation.MESSAGES["url"])
    return True


HEX_HASH = validate.Regexp(r"^[0-9a-f]{64}\Z", error="Must be 64 lower-case hex digits.")
#: The largest row id: ids are INTEGER columns, 32-bit on PostgreSQL.
MAX_ID = 2**31 - 1


class Text(fields.String):
    """A string the databases can store and compare: no NUL, no lone surrogate."""

    default_error_messages = {"unstorable": "Must be text without NUL or unpaired surrogates."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not is_storable_text(text):
            raise self.make_error("unstorable")
        return text


class RegionCode(fields.String):
    """An ISO 3166 country or subdivision code (``FR``, ``us-ca``), upper-cased."""

    default_error_messages = {"region": "{input!r} " + validation.MESSAGES["region"]}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        code = regions.region_code(text)
        if code is None:
            raise self.make_error("region", input=text)
        return code


#: The ``region`` argument of the server's checks and records.
REGION = {
    "metadata": {
        "description": "The person's ISO 3166 region (FR, US-CA) for the site's region "
        "rules; without it, the strictest rule (opt-in)."
    }
}


class StrictBoolean(fields.Boolean):
    """Only JSON true and false: "yes", 1 or "on" are not a recorded choice."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class DecisionArgs(ma.Schema):
    purpose = fields.String(required=True, validate=KEY)
    granted = StrictBoolean(required=True)
    services = fields.Dict(
        keys=fields.String(validate=KEY),
        values=StrictBoolean(),
        validate=validate.Length(max=100),
        metadata={"description": "Per-service choices inside the purpose."},
    )


class _SubmissionArgs(ma.Schema):
    decisions = fields.List(
        fields.Nested(DecisionArgs), required=True, validate=validate.Length(min=1, max=50)
    )
    policy_version = Text(validate=validate.Length(min=1, max=64))
    config_hash = fields.String(validate=HEX_HASH)
    language = fields.String(validate=LANGUAGE)


class IdentityArgs(ma.Schema):
    """Who a server call is about: exactly one of user_id, email, visitor_token."""

    user_id = Text(validate=validate.Length(min=1, max=200))
    email = Text(validate=validate.Length(min=3, max=254))
    visitor_token = Text(validate=validate.Length(min=1, max=500))

    @ma.validates_schema
    def _one_identity(self, data, **kwargs):
        given = [name for name in ("user_id", "email", "visitor_token") if name in data]
        if len(given) != 1:
            raise ma.ValidationError(
                "Give exactly one of user_id, email, visitor_token.", "user_id"
            )


class RecordArgs(_SubmissionArgs):
    # A browser says only what a visitor did: the first layer or the preference centre.
    # "api" and "import" are the site's backend's (server key); "gpc" is not a click.
    # "gpc": the widget's opt-out for a browser that sends Global Privacy Control
    # under an opt-out rule (refusals only, with the Sec-GPC header).
    source = fields.String(
        load_default="banner", validate=validate.OneOf(["banner", "preferences", "gpc"])
    )


class ServerRecordArgs(_SubmissionArgs, IdentityArgs):
    """Who: one of user_id, email, visitor_token; or a user_id with the email to attach."""

    source = fields.String(load_default="api", validate=validate.OneOf(["api", "import"]))
    region = RegionCode(**REGION)

    @ma.validates_schema
    def _one_identity(self, data, **kwargs):
        given = {name for name in ("user_id", "email", "visitor_token") if name in data}
        if len(given) != 1 and given != {"user_id", "email"}:
            raise ma.ValidationError(
                "Give exactly one of user_id, email, visitor_token (or user_id with email).",
                "user_id",
            )


class RecordSchema(ma.Schema):
    id = fields.Integer()
    sequence = fields.Integer()
    recorded_at = fields.DateTime()
    event = fields.String()
    source = fields.String(validate=validate.OneOf(RECORD_SOURCES))
    decisions = fields.List(fields.Dict())
    details = fields.Dict()
    policy_version = fields.String(allow_none=True)
    config_hash = fields.String(allow_none=True)
    language = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    mode = fields.String(
        allow_none=True, metadata={"description": "The site's rule there: opt-in, opt-out, notice."}
    )
    gpc = fields.Boolean(attribute="is_gpc")
    ip = fields.String(attribute="ip_truncated", allow_none=True)
    previous_hash = fields.String()
    hash = fields.String(attribute="record_hash")


class RecordResultSchema(ma.Schema):
    visitor_token = fields.String()
    visitor_id = fields.String()
    record = fields.Nested(RecordSchema)


class CheckArgs(ma.Schema):
    purpose = Text(required=True, validate=validate.Length(min=1, max=64))
    service = Text(validate=validate.Length(min=1, max=64))


class ServerCheckArgs(CheckArgs, IdentityArgs):
    region = RegionCode(**REGION)
    gpc = fields.Boolean(
        load_default=False,
        truthy={"true", "1"},
        falsy={"false", "0"},
        metadata={"description": "The person's browser sends Global Privacy Control."},
    )


class CheckSchema(ma.Schema):
    allowed = fields.Boolean(required=True)
    purpose = fields.String()
    service = fields.String(allow_none=True)
    reason = fields.String(
        metadata={"description": "One of: " + ", ".join(reason.value for reason in Reason)}
    )
    decided_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)


class PurposeStateSchema(ma.Schema):
    allowed = fields.Boolean()
    reason = fields.String()
    decided_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)
    services = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema))


class VisitorDataSchema(ma.Schema):
    visitor_id = fields.String()
    erased = fields.Boolean()
    state = fields.Dict(keys=fields.String(), values=fields.Nested(PurposeStateSchema))
    history = fields.List(fields.Nested(RecordSchema))


SHORT = validate.Length(max=validation.MAX_NAME_LENGTH)
LONG = validate.Length(max=validation.MAX_TEXT_LENGTH)


class CookieSchema(ma.Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    is_prefix = fields.Boolean()
    provider = fields.String(validate=SHORT)
    duration = fields.String(validate=SHORT)
    description = fields.String(validate=LONG)
    domain = fields.String(allow_none=True, validate=SHORT)
    path = fields.String(allow_none=True, validate=SHORT)


class ServiceSchema(ma.Schema):
    key = fields.String(required=True, validate=KEY)
    name = fields.String(validate=SHORT)
    provider = fields.String(validate=SHORT)
    policy_url = fields.String(allow_none=True, validate=web_url)
    cookies = fields.List(fields.Nested(CookieSchema))


class BannerPurposeSchema(ma.Schema):
    key = fields.String()
    kind = fields.String()
    is_required = fields.Boolean()
    translations = fields.Dict(keys=fields.String(), values=fields.Dict())
    consent_mode = fields.List(fields.String())
    cookies = fields.List(fields.Nested(CookieSchema))
    services = fields.List(fields.Nested(ServiceSchema))
    opt_out = fields.Boolean(metadata={"description": "Runs until opted out under opt-out."})
    notice_only = fields.Boolean(metadata={"description": "Runs with a notice under notice."})


class PolicySchema(ma.Schema):
    version = fields.String()
    url = fields.String(allow_none=True)
    published_at = fields.String()
    updated_at = fields.String(metadata={"description": "The policy's Last Updated date."})
    text_sha256 = fields.String(allow_none=True)
    is_material = fields.Boolean()


class BannerConfigArgs(ma.Schema):
    lang = fields.String(
        validate=validate.Regexp(
            r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*(,[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*){0,9}\Z",
            error="Give up to 10 language tags, comma-separated, best first.",
        ),
        metadata={"description": "The visitor's languages, best first (fr-CA,fr,en)."},
    )


class AppearanceSchema(ma.Schema):
    layout = fields.String(validate=validate.OneOf(["box", "bar", "modal"]))
    theme = fields.String(validate=validate.OneOf(["auto", "light", "dark"]))
    settings_button = fields.Boolean()
    button_side = fields.String(validate=validate.OneOf(["left", "right"]))


class BannerConfigSchema(ma.Schema):
    site = fields.Dict()
    rights_request_url = fields.String(
        metadata={"description": "The form where a person makes a privacy request."}
    )
    config_hash = fields.String()
    policy = fields.Nested(PolicySchema, allow_none=True, metadata={"description": "In effect."})
    material_version = fields.String(allow_none=True)
    scheduled_policies = fields.List(
        fields.Nested(PolicySchema),
        metadata={"description": "Published ahead: each counts from its published_at."},
    )
    lifetime_days = fields.Integer()
    max_age = fields.Integer(metadata={"description": "Seconds a copy may be used unasked."})
    origins = fields.List(fields.String(), metadata={"description": "Where the banner runs."})
    appearance = fields.Nested(AppearanceSchema)
    region = fields.String(allow_none=True, metadata={"description": "The visitor's, if known."})
    mode = fields.String(metadata={"description": "opt-in, opt-out or notice, there."})
    region_rules = fields.List(fields.String(), metadata={"description": "REGIONS=MODE."})
    consent_mode_regions = fields.List(
        fields.Dict(), metadata={"description": "Consent Mode defaults: region codes, mode."}
    )
    languages = fields.List(fields.String())
    default_language = fields.String()
    texts = fields.Dict(keys=fields.String(), values=fields.Dict())
    purposes = fields.List(fields.Nested(BannerPurposeSchema))


class LinkArgs(ma.Schema):
    visitor_token = Text(required=True, validate=validate.Length(min=1, max=500))
    user_id = Text(required=True, validate=validate.Length(min=1, max=200))


class LinkResultSchema(ma.Schema):
    subject = fields.String(metadata={"description": "Pseudonym of the linked subject."})
    record = fields.Nested(RecordSchema)


class BulkCheckArgs(ma.Schema):
    purpose = Text(required=True, validate=validate.Length(min=1, max=64))
    region = RegionCode(**REGION)
    emails = fields.List(
        fields.String(validate=validate.Length(max=320)),
        validate=validate.Length(min=1, max=10_000),
    )
    user_ids = fields.List(
        fields.String(validate=validate.Length(max=200)),
        validate=validate.Length(min=1, max=10_000),
    )

    @ma.validates_schema
    def _one_list(self, data, **kwargs):
        if ("emails" in data) == ("user_ids" in data):
            raise ma.ValidationError("Give either emails or user_ids.", "emails")


class BulkResultSchema(ma.Schema):
    email = fields.String()
    user_id = fields.String()
    allowed = fields.Boolean()
    reason = fields.String()


class BulkCheckSchema(ma.Schema):
    purpose = fields.String()
    allowed_count = fields.Integer()
    results = fields.List(fields.Nested(BulkResultSchema))


class SuppressionArgs(ma.Schema):
    purpose = Text(required=True, validate=validate.Length(min=1, max=64))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10_000))
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))


class SuppressionEntrySchema(ma.Schema):
    email = fields.String(allow_none=True)
    user_id = fields.String(allow_none=True)
    reason = fields.String()
    decided_at = fields.DateTime(allow_none=True)


class SuppressionPageSchema(ma.Schema):
    items = fields.List(fields.Nested(SuppressionEntrySchema))
    next_after = fields.Integer(
        allow_none=True, metadata={"description": "Pass as `after` for the next page."}
    )


class UnsubscribeLinksArgs(ma.Schema):
    purpose = Text(required=True, validate=validate.Length(min=1, max=64))
    emails = fields.List(
        fields.String(validate=validate.Length(max=320)),
        required=True,
        validate=validate.Length(min=1, max=1000),
    )


class UnsubscribeLinkSchema(ma.Schema):
    email = fields.String()
    url = fields.String()
    headers = fields.Dict(keys=fields.String(), values=fields.String())


class UnsubscribeLinksSchema(ma.Schema):
    links = fields.List(fields.Nested(UnsubscribeLinkSchema))


class _ReasonArgs(ma.Schema):
    reason = Text(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "Why: free text or a ticket number, kept in the access log."},
    )


class ErasureArgs(IdentityArgs, _ReasonArgs):
    pass


class ExportArgs(IdentityArgs, _ReasonArgs):
    format = fields.String(
        load_default="json", validate=validate.OneOf(["json", "csv", "receipts"])
    )


class CorrectionArgs(IdentityArgs, _ReasonArgs):
    field = fields.String(required=True, validate=validate.OneOf(["email", "user_id"]))
    value = Text(
        required=True,
        allow_none=True,
        validate=validate.Length(min=1, max=254),
        metadata={"description": "The new value, or null to remove it."},
    )


class RightsResultSchema(ma.Schema):
    subject = fields.String()
    erased = fields.Boolean()
    record = fields.Nested(RecordSchema, allow_none=True)


class ExportedSubjectSchema(ma.Schema):
    pseudonym = fields.String()
    email = fields.String(allow_none=True)
    user_id = fields.String(allow_none=True)
    visitor_ids = fields.List(fields.String())
    created_at = fields.DateTime()
    erased_at = fields.DateTime(allow_none=True)


class BannerWidgetSchema(ma.Schema):
    version = fields.String()
    integrity = fields.String()


class BannerVersionSchema(ma.Schema):
    config_hash = fields.String()
    first_served_at = fields.DateTime()
    last_served_at = fields.DateTime()
    policy = fields.Dict(allow_none=True)
    widget = fields.Nested(BannerWidgetSchema)
    content = fields.Dict(metadata={"description": "The configuration exactly as served."})


class SubjectExportSchema(ma.Schema):
    site = fields.String()
    exported_at = fields.DateTime()
    subject = fields.Nested(ExportedSubjectSchema)
    state = fields.Dict(keys=fields.String(), values=fields.Nested(PurposeStateSchema))
    history = fields.List(fields.Nested(RecordSchema))
    banner_versions = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(BannerVersionSchema),
        metadata={"description": "The archived banner each record's config_hash names."},
    )


class ReceiptControllerSchema(ma.Schema):
    pii_controller = fields.String()
    contact = fields.String(allow_none=True)


class ReceiptPurposeSchema(ma.Schema):
    purpose = fields.String()
    purpose_category = fields.String(allow_none=True)
    consent_type = fields.String()
    state = fields.String(validate=validate.OneOf(["granted", "refused"]))
    services = fields.Dict(keys=fields.String(), values=fields.Boolean())


class ConsentReceiptSchema(ma.Schema):
    """One record as a consent receipt (ISO/IEC TS 27560, Kantara CR 1.1)."""

    version = fields.String()
    receipt_id = fields.String()
    record_id = fields.Integer()
    consent_timestamp = fields.DateTime()
    collection_method = fields.String()
    event_type = fields.String()
    language = fields.String(allow_none=True)
    pii_principal_id = fields.String()
    pii_controllers = fields.List(fields.Nested(ReceiptControllerSchema))
    policy_url = fields.String(allow_none=True)
    policy_version = fields.String(allow_none=True)
    purposes = fields.List(fields.Nested(ReceiptPurposeSchema))
    gpc = fields.Boolean()
    previous_receipt_id = fields.String()
    banner_version = fields.Nested(BannerVersionSchema, allow_none=True)


class ErrorSchema(ma.Schema):
    error = fields.String(required=True, metadata={"description": "Machine-readable name."})
    message = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Per-field messages, for validation errors."},
    )
    allowed = fields.Boolean(metadata={"description": "Checks only: always false on error."})
    reason = fields.String(metadata={"description": "Checks only: why not allowed."})


class PublicRightsRequestArgs(ma.Schema):
    kind = fields.String(required=True, validate=validate.OneOf(RIGHTS_KINDS))
    email = Text(required=True, validate=validate.Length(min=3, max=254))
    message = Text(validate=validate.Length(max=2000))


class ServerRightsRequestArgs(IdentityArgs):
    kind = fields.String(required=True, validate=validate.OneOf(RIGHTS_KINDS))
    message = Text(validate=validate.Length(max=2000))


class RightsRequestReceiptSchema(ma.Schema):
    reference = fields.String()
    kind = fields.String()
    state = fields.String()
    received_at = fields.DateTime()
    due_at = fields.DateTime()
