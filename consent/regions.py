"""Which legal regime applies to a visitor, and what it lets run before a choice.

A visitor's region is an ISO 3166 code (``FR``, ``US-CA``) read from a header the site's
proxy or CDN sets (``CONSENT_REGION_HEADER``, with ``CONSENT_SUBREGION_HEADER`` for a
subdivision sent apart); no address lookup. The header is read only when configured,
since only a proxy in front of the service can be trusted to set it. Anything else (no
header, ``XX``, Tor's ``T1``, garbage) is an unknown region, which gets the strictest
rule: opt-in.

A site keeps an ordered list of rules, ``{"regions": [...], "mode": ...}``; the first
rule naming the visitor's region, its country or a group holding either applies, and
where none does, opt-in. ``opt-in`` is the banner as always; ``opt-out`` lets the
purposes the site marks run until the person opts out (Global Privacy Control is an
opt-out of selling and sharing); ``notice`` shows information, and lets the purposes
marked for it (and the opt-out ones) run. Opt-in cannot be replaced in the EEA, the UK
or Switzerland: ``validate_rules`` refuses such a rule, and ``mode_for`` never answers
anything else there, whatever is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from consent import validation
from consent.db import db
from consent.errors import InvalidRequest

_DATA = json.loads((Path(__file__).parent / "data" / "regions.json").read_text("utf-8"))

OPT_IN, OPT_OUT, NOTICE = MODES = ("opt-in", "opt-out", "notice")
#: A rule entry for every known region no earlier rule names.
ANY_OTHER = "*"
COUNTRIES = frozenset(_DATA["countries"])
US_SUBDIVISIONS = frozenset(_DATA["us_subdivisions"])
#: EU, EEA (EU with Iceland, Liechtenstein, Norway), UK (GB) and US-PRIVACY-STATES.
GROUPS: dict[str, frozenset[str]] = {
    name: frozenset(codes) for name, codes in _DATA["groups"].items()
}
#: Where opt-in can never be replaced: the EEA, the United Kingdom and Switzerland.
PROTECTED = GROUPS["EEA"] | {"GB", "CH"}
#: Rules an admin adds with one button (or types): opt-in in Europe, opt-out in the
#: US states with a comprehensive privacy law.
PRESETS = {
    "europe": "EEA,UK,CH=opt-in",
    "us-states": "US-PRIVACY-STATES=opt-out",
}
MAX_RULES = 50
FIELD = "region_rules"


# --- a visitor's region ---------------------------------------------------------------


def region_code(value: Any) -> str | None:
    """The ISO 3166 code ``value`` holds (``fr`` is ``FR``), or None if it is none.

    Countries are checked against ISO 3166-1, US states against ISO 3166-2; another
    country's subdivision needs only the code's shape.
    """
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    if not validation.REGION_CODE.match(code) or code[:2] not in COUNTRIES:
        return None
    if code.startswith("US-") and code not in US_SUBDIVISIONS:
        return None
    return code


def visitor_region(country: str | None, subdivision: str | None = None) -> str | None:
    """The region of a visitor from the proxy's headers: ``US`` and ``CA`` make ``US-CA``.

    A country header that already holds a subdivision (``US-CA``) is taken as it is; an
    unusable subdivision leaves the country.
    """
    code = region_code(country)
    if code is None or "-" in code or not subdivision:
        return code
    part = subdivision.strip().upper()
    return region_code(part if part.startswith(f"{code}-") else f"{code}-{part}") or code


def region_headers(config) -> list[str]:
    """The headers the region is read from (none when unconfigured): for ``Vary``."""
    return [name for name in (config["REGION_HEADER"], config["SUBREGION_HEADER"]) if name]


def request_region(get_header: Callable[[str], str | None], config) -> str | None:
    """The visitor's region from a request's trusted headers; None if unknown."""
    country_header, subregion_header = config["REGION_HEADER"], config["SUBREGION_HEADER"]
    if not country_header:
        return None
    return visitor_region(
        get_header(country_header), get_header(subregion_header) if subregion_header else None
    )


def sends_gpc(get_header: Callable[[str], str | None]) -> bool:
    """Whether the browser sends Global Privacy Control (``Sec-GPC: 1``)."""
    return (get_header("Sec-GPC") or "").strip() == "1"


def environ_header(environ: dict) -> Callable[[str], str | None]:
    """Read request headers from a WSGI environ by name (for the fast path)."""
    return lambda name: environ.get("HTTP_" + name.upper().replace("-", "_"))


# --- rules ----------------------------------------------------------------------------


def format_rule(rule: dict[str, Any]) -> str:
    """A rule as it is typed: ``EEA,UK,CH=opt-in``."""
    return f"{','.join(rule['regions'])}={rule['mode']}"


def parse_rule(text: str, field: str = FIELD) -> dict[str, Any]:
    """Read one rule typed as ``REGIONS=MODE``; refuse an unknown region or mode."""
    regions_text, has_mode, mode = text.partition("=")
    mode = mode.strip().lower()
    entries = [entry.upper() for entry in re.split(r"[,\s]+", regions_text) if entry]
    if not has_mode or mode not in MODES or not entries:
        raise InvalidRequest(
            field,
            f"{text.strip()!r}: write REGIONS=MODE, like EEA,UK,CH=opt-in "
            "(the mode is opt-in, opt-out or notice).",
        )
    for entry in entries:
        if entry != ANY_OTHER and entry not in GROUPS and region_code(entry) != entry:
            raise InvalidRequest(
                field,
                f"{entry!r} is not a region: use an ISO 3166 code (FR, US-CA), "
                f"{', '.join(GROUPS)} or {ANY_OTHER} (any other region).",
            )
    return {"regions": list(dict.fromkeys(entries)), "mode": mode}


def _reaches_protected(entry: str) -> bool:
    return bool(GROUPS[entry] & PROTECTED) if entry in GROUPS else entry[:2] in PROTECTED


def validate_rules(rules: list[dict[str, Any]], field: str = FIELD) -> list[dict[str, Any]]:
    """Return the rules, or refuse the first that would replace opt-in in the EEA, UK or CH.

    ``*`` with another mode is accepted only after rules that keep all three opt-in.
    """
    if len(rules) > MAX_RULES:
        raise InvalidRequest(field, f"Use at most {MAX_RULES} rules.")
    named: set[str] = set()
    for rule in rules:
        for entry in rule["regions"]:
            if rule["mode"] != OPT_IN and entry == ANY_OTHER and not PROTECTED <= named:
                raise InvalidRequest(
                    field,
                    f"{format_rule(rule)!r} would reach the EEA, the UK and Switzerland, "
                    "where opt-in cannot be replaced: put EEA,UK,CH=opt-in before it.",
                )
            if rule["mode"] != OPT_IN and entry != ANY_OTHER and _reaches_protected(entry):
                raise InvalidRequest(
                    field,
                    f"Opt-in cannot be replaced in the EEA, the UK or Switzerland: {entry} "
                    f"must stay opt-in ({format_rule(rule)!r}).",
                )
            named |= PROTECTED if entry == ANY_OTHER else GROUPS.get(entry, {entry})
    return rules


def parse_rules(lines: Iterable[str], field: str = FIELD) -> list[dict[str, Any]]:
    """Read rules typed one per line (blank lines skipped) and validate them together."""
    return validate_rules([parse_rule(line, field) for line in lines if line.strip()], field)


def set_region_rules(site, lines: Iterable[str]) -> list[dict[str, Any]]:
    """Replace a site's region rules with the rules typed (one per line)."""
    site.region_rules = parse_rules(lines)
    db.session.flush()
    return site.region_rules


def set_purpose_defaults(
    site, *, opt_out: Iterable[str] | None = None, notice_only: Iterable[str] | None = None
) -> None:
    """Mark exactly these purposes as allowed by an opt-out default (``opt_out``) or with
    a notice (``notice_only``); None leaves a flag as it is. Required purposes need neither."""
    purposes = {purpose.key: purpose for purpose in site.purposes}
    for field, keys, attribute in (
        ("opt_out", opt_out, "is_opt_out_default"),
        ("notice_only", notice_only, "is_notice_only"),
    ):
        if keys is None:
            continue
        keys = set(keys)
        for key in sorted(keys):
            if key not in purposes:
                raise InvalidRequest(field, f"Unknown purpose {key!r} for this site.")
            if purposes[key].is_required:
                raise InvalidRequest(field, f"{key!r} is required: it is always on already.")
        for key, purpose in purposes.items():
            setattr(purpose, attribute, key in keys)
    db.session.flush()


def describe_rules(site) -> str:
    """One line: the rules in order, then which purposes run by default where."""
    rules = "; ".join(format_rule(rule) for rule in site.region_rules or []) or "none"
    flagged = {
        name: ", ".join(p.key for p in site.purposes if getattr(p, attribute)) or "none"
        for name, attribute in (("opt-out", "is_opt_out_default"), ("notice", "is_notice_only"))
    }
    return (
        f"Region rules of {site.key!r}: {rules} (where none applies, and for an unknown "
        "region: opt-in). "
        f"Allowed until opted out under opt-out: {flagged['opt-out']}; "
        f"under notice also: {flagged['notice']}."
    )


def mode_for(rules: list[dict[str, Any]] | None, region: str | None) -> str:
    """The mode of the first rule naming the region, its country or a group of either.

    An unknown region, and the EEA, the UK and Switzerland whatever is stored, are opt-in.
    """
    if region is None or region[:2] in PROTECTED:
        return OPT_IN
    country = region[:2]
    for rule in rules or ():
        for entry in rule["regions"]:
            group = GROUPS.get(entry, ())
            if entry in (ANY_OTHER, region, country) or region in group or country in group:
                return rule["mode"]
    return OPT_IN


def consent_mode_regions(rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The rules other than opt-in with their groups spelled out, for Consent Mode's
    per-region defaults (``*`` cannot be spelled out: its regions get the denied default)."""
    spelled = []
    for rule in rules or ():
        codes = [code for entry in rule["regions"] for code in sorted(GROUPS.get(entry, {entry}))]
        codes = [code for code in dict.fromkeys(codes) if code != ANY_OTHER]
        if rule["mode"] != OPT_IN and codes:
            spelled.append({"region": codes, "mode": rule["mode"]})
    return spelled


# --- what a mode lets run before a choice ---------------------------------------------


def is_advertising(purpose_key: str, consent_mode: list[str] | None) -> bool:
    """Whether a purpose sells or shares for ads: what Global Privacy Control opts out of."""
    return purpose_key == "marketing" or any(
        signal.startswith("ad_") for signal in consent_mode or []
    )


def allows_by_default(
    mode: str,
    *,
    is_opt_out_default: bool,
    is_notice_only: bool,
    is_advertising: bool,
    is_gpc: bool,
) -> bool:
    """Whether a purpose may run before any choice under ``mode`` (an opt-out default).

    Never under opt-in; never for an advertising purpose when the browser sends GPC.
    """
    if is_gpc and is_advertising:
        return False
    if mode == OPT_OUT:
        return is_opt_out_default
    if mode == NOTICE:
        return is_opt_out_default or is_notice_only
    return False


def purpose_default(purpose, mode: str, *, is_gpc: bool) -> bool:
    """``allows_by_default`` for a purpose row."""
    return allows_by_default(
        mode,
        is_opt_out_default=bool(purpose.is_opt_out_default),
        is_notice_only=bool(purpose.is_notice_only),
        is_advertising=is_advertising(purpose.key, purpose.consent_mode),
        is_gpc=is_gpc,
    )


def refuse_false_gpc_record(source: str, decisions: list[dict[str, Any]], is_gpc: bool) -> None:
    """A record with source ``gpc`` is the browser's signal: only with it, refusals only."""
    if source != "gpc":
        return
    if not is_gpc:
        raise InvalidRequest("source", "Source 'gpc' needs the browser's Sec-GPC: 1 header.")
    if any(decision["granted"] for decision in decisions):
        raise InvalidRequest("decisions", "A Global Privacy Control record only opts out.")
