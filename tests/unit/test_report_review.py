"""The report against SES's review lines: the standing per class and the lines on the chart (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from feedback.reports.html import html_page, svg_chart
from feedback.reports.model import (
    Hour,
    Report,
    SummaryLine,
    build,
    percent,
    review_lines,
    standing,
)  # fmt: skip
from relay.store import EventRecord

UNTIL = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
SINCE = UNTIL - timedelta(hours=24)


def line(sent: int, permanent: int = 0, complaints: int = 0, transient: int = 0) -> SummaryLine:
    return SummaryLine("transactional", sent, permanent, transient, 0, complaints)


@pytest.mark.parametrize(
    ("summary", "level", "bounce", "complaint"),
    [
        (line(1000, 49), "ok", "4.90%: 98% of the 5% review line", "0.000%: 0% of the 0.1% review line"),
        (line(1000, 50), "review", "5.00%: over the 5% review line (1.0 times it)", None),
        (line(1000, 99), "review", "9.90%: over the 5% review line (2.0 times it)", None),
        (line(1000, 100), "pause", "10.00%: over SES's 10% pause line", None),
        (line(1000, 0, 1), "review", None, "0.100%: over the 0.1% review line (1.0 times it)"),
        (line(1000, 0, 5), "pause", None, "0.500%: over SES's 0.5% pause line"),
        (line(1000, 10, 2), "review", "1.00%: 20% of the 5% review line", None),  # the worse of the two
        (line(1000, 0, 0, 900), "ok", "0.00%: 0% of the 5% review line", None),  # transient: not counted
        (line(0, 3, 1), "no sends", "", ""),
    ],
)
def test_standing_sets_each_rate_against_its_line(summary, level, bounce, complaint) -> None:
    st = standing(summary)
    assert st.level == level
    if bounce is not None:
        assert st.bounce == bounce
    if complaint is not None:
        assert st.complaint == complaint
    assert st.sentence().startswith(f"transactional: {level}")


def test_percent_says_thresholds_as_people_do() -> None:
    assert [percent(v) for v in (0.05, 0.001, 0.1, 0.005, 0.025)] == ["5%", "0.1%", "10%", "0.5%", "2.5%"]


def report_with(sent: int, hours: list[Hour]) -> Report:
    return Report(SINCE, UNTIL, (), (SummaryLine("all", sent, 0, 0, 0, 0),), tuple(hours))


def empty_hours() -> list[Hour]:
    return [Hour(SINCE + timedelta(hours=i), 0, 0, 0) for i in range(24)]


def test_review_lines_are_the_rates_applied_to_the_windows_average_hour() -> None:
    assert review_lines(report_with(2400, empty_hours())) == pytest.approx((5.0, 0.1))
    assert review_lines(report_with(0, empty_hours())) is None  # no sends, no rate


def test_the_chart_draws_the_lines_it_can_and_names_those_far_above_the_bars() -> None:
    hours = empty_hours()
    hours[3] = Hour(hours[3].start, 6, 1, 4)
    chart = svg_chart(hours, (5.0, 0.1))
    assert chart.count('<line class="review"') == 2
    assert "bounce review line (5%): 5 per hour" in chart
    assert "complaint review line (0.1%): 0.1 per hour" in chart
    assert "4 permanent bounces" in chart and "2 transient or undetermined bounces" in chart

    far = svg_chart(hours, (500.0, 10.0))  # a busy account: 10,000 sends an hour
    assert far.count('<line class="review"') == 1  # the complaint line still fits
    assert "bounce review line (5%): 500 per hour, above this chart" in far

    assert '<line class="review"' not in svg_chart(hours, None)


def test_the_page_says_so_when_there_is_nothing_to_set_against_the_lines() -> None:
    record = EventRecord(
        "k", "bounce", "Bounce", "a@example.com", "m1", UNTIL - timedelta(hours=1), "{}",
        bounce_type="Permanent", klass="list",
    )  # fmt: skip
    page = html_page(build([record], since=SINCE, until=UNTIL))
    assert "No sends were counted in this window, so the chart has no review lines" in page
    assert "no sends counted in the window: no rate to judge" in page
    assert '<line class="review"' not in page and "Export to Excel" not in page  # no spreadsheet beside it

    busy = build([record], since=SINCE, until=UNTIL, sent=[("list", "sent", 480), ("list", "delivered", 470)])
    page = html_page(busy, xlsx_href="report.xlsx")
    assert "480 sent in 24 hours" in page  # 20 an hour: the bounce line at 1, the complaint line at 0.02
    assert page.count('<line class="review"') == 2
    assert '<a class="export" href="report.xlsx">Export to Excel</a>' in page
