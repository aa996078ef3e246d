"""Consent rates: banners shown, interaction rate, and per purpose the share granted.

Counts come from ``BannerImpression`` (identifier-free daily counts) and the decisions
inside ``ConsentRecord`` rows of the chosen range, read two columns at a time in
batches. The chart is plain SVG laid out here and drawn by a template.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import select

from consent.admin.forms import start_of
from consent.db import db
from consent.models import BannerImpression, ConsentRecord, Site

#: The widget records with these sources; other sources never follow a banner.
WIDGET_SOURCES = ("banner", "preferences", "gpc")
#: The longest range one request may add up.
MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
#: One colour and dash pattern per series (colour is never the only cue); each has at
#: least 3:1 contrast on white.
SERIES_STYLES = [
    ("#1f4fd1", ""),
    ("#b3261e", "6 4"),
    ("#1b7f3b", "2 3"),
    ("#7b3fa8", "10 3 2 3"),
    ("#a35200", "1 4"),
    ("#00707a", "8 2"),
]


@dataclass
class Tally:
    granted: int = 0
    denied: int = 0

    @property
    def total(self) -> int:
        return self.granted + self.denied

    @property
    def share_granted(self) -> float | None:
        return self.granted / self.total if self.total else None


@dataclass
class Period:
    """One day, or one week starting on a Monday."""

    start: date
    banners_shown: int = 0
    #: Decision records sent by the widget in the period.
    interactions: int = 0
    purposes: dict[str, Tally] = field(default_factory=dict)

    @property
    def interaction_rate(self) -> float | None:
        return self.interactions / self.banners_shown if self.banners_shown else None


@dataclass
class RegionRates:
    """The decisions of one region and mode (``region`` None: unknown or not recorded)."""

    region: str | None
    mode: str | None
    records: int = 0
    purposes: dict[str, Tally] = field(default_factory=dict)


@dataclass
class ConsentRates:
    start: date
    end: date
    #: "day" or "week".
    period: str
    #: Optional purposes in banner order (required ones are always on: nothing to show).
    purposes: list[str]
    periods: list[Period]
    #: Per region and mode the records were taken under, most records first.
    regions: list[RegionRates] = field(default_factory=list)

    @property
    def totals(self) -> Period:
        total = Period(self.start, purposes={key: Tally() for key in self.purposes})
        for period in self.periods:
            total.banners_shown += period.banners_shown
            total.interactions += period.interactions
            for key, tally in period.purposes.items():
                total.purposes[key].granted += tally.granted
                total.purposes[key].denied += tally.denied
        return total


def default_range(today: date) -> tuple[date, date]:
    return today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today


def _period_start(day: date, period: str) -> date:
    return day - timedelta(days=day.weekday()) if period == "week" else day


def consent_rates(site: Site, start: date, end: date, period: str = "day") -> ConsentRates:
    """Add up banners shown and decisions per purpose between two days (inclusive)."""
    purposes = [purpose.key for purpose in site.purposes if not purpose.is_required]
    step = timedelta(days=7 if period == "week" else 1)
    periods: dict[date, Period] = {}
    day = _period_start(start, period)
    while day <= end:
        periods[day] = Period(day, purposes={key: Tally() for key in purposes})
        day += step

    for day, count in db.session.execute(
        select(BannerImpression.day, BannerImpression.count).where(
            BannerImpression.site_id == site.id,
            BannerImpression.day >= start,
            BannerImpression.day <= end,
        )
    ):
        periods[_period_start(day, period)].banners_shown += count

    by_region: dict[tuple[str | None, str | None], RegionRates] = {}
    rows = db.session.execute(
        select(
            ConsentRecord.recorded_at,
            ConsentRecord.source,
            ConsentRecord.decisions,
            ConsentRecord.region,
            ConsentRecord.mode,
        )
        .where(
            ConsentRecord.site_id == site.id,
            ConsentRecord.event == "decision",
            ConsentRecord.recorded_at >= start_of(start),
            ConsentRecord.recorded_at < start_of(end + timedelta(days=1)),
        )
        .execution_options(yield_per=2000)
    )
    for recorded_at, source, decisions, region, mode in rows:
        bucket = periods[_period_start(recorded_at.date(), period)]
        if source in WIDGET_SOURCES:
            bucket.interactions += 1
        place = by_region.get((region, mode))
        if place is None:
            place = RegionRates(region, mode, purposes={key: Tally() for key in purposes})
            by_region[region, mode] = place
        place.records += 1
        for decision in decisions:
            for tallies in (bucket.purposes, place.purposes):
                tally = tallies.get(decision["purpose"])
                if tally is None:
                    continue
                if decision["granted"]:
                    tally.granted += 1
                else:
                    tally.denied += 1
    ranked = sorted(by_region.values(), key=lambda place: (-place.records, place.region or ""))
    return ConsentRates(start, end, period, purposes, list(periods.values()), ranked)


def rates_csv(rates: ConsentRates) -> str:
    """One row per period: banners, interactions, and granted/denied per purpose."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["period_start", "banners_shown", "interactions", "interaction_rate"]
    for key in rates.purposes:
        header += [f"{key}_granted", f"{key}_denied", f"{key}_share_granted"]
    writer.writerow(header)
    for period in rates.periods:
        row = [
            period.start.isoformat(),
            period.banners_shown,
            period.interactions,
            _ratio(period.interaction_rate),
        ]
        for key in rates.purposes:
            tally = period.purposes[key]
            row += [tally.granted, tally.denied, _ratio(tally.share_granted)]
        writer.writerow(row)
    return out.getvalue()


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# --- the chart ------------------------------------------------------------------------

WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 40
MAX_X_LABELS = 8


@dataclass
class Point:
    x: float
    y: float
    label: str


@dataclass
class Series:
    purpose: str
    colour: str
    dash: str
    #: Runs of consecutive periods with decisions; a period without any breaks the line.
    segments: list[list[Point]]

    @property
    def points(self) -> list[Point]:
        return [point for segment in self.segments for point in segment]


@dataclass
class Chart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    #: (y, label) for the horizontal grid lines.
    y_ticks: list[tuple[float, str]]
    #: (x, label) for the period labels under the axis.
    x_ticks: list[tuple[float, str]]
    series: list[Series]


def share_chart(rates: ConsentRates) -> Chart:
    """Lay out a line chart of the share granted per purpose and period."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    count = len(rates.periods)

    def x_of(index: int) -> float:
        return LEFT + (plot_width / 2 if count == 1 else index * plot_width / (count - 1))

    def y_of(share: float) -> float:
        return TOP + (1 - share) * plot_height

    label_every = max(1, -(-count // MAX_X_LABELS))
    prefix = "w/c " if rates.period == "week" else ""
    x_ticks = [
        (round(x_of(index), 1), f"{prefix}{period.start:%b} {period.start.day}")
        for index, period in enumerate(rates.periods)
        if index % label_every == 0
    ]
    y_ticks = [(round(y_of(share / 100), 1), f"{share}%") for share in (0, 25, 50, 75, 100)]
    series = []
    for number, key in enumerate(rates.purposes):
        colour, dash = SERIES_STYLES[number % len(SERIES_STYLES)]
        segments: list[list[Point]] = [[]]
        for index, period in enumerate(rates.periods):
            tally = period.purposes[key]
            if tally.share_granted is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(
                Point(
                    round(x_of(index), 1),
                    round(y_of(tally.share_granted), 1),
                    f"{key}, {prefix}{period.start.isoformat()}: {tally.share_granted:.0%} granted "
                    f"({tally.granted} of {tally.total})",
                )
            )
        series.append(Series(key, colour, dash, [s for s in segments if s]))
    return Chart(WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM, y_ticks, x_ticks, series)
