"""The report as one self-contained HTML page, and the short page of the published report's mail.

No script and nothing fetched: the chart is inline SVG, the style is inline CSS,
so the page reads the same from a file, a mail body or an S3 link. The only link
out is "Export to Excel", to the spreadsheet beside it. Every cell is escaped: the
rows hold text that strangers wrote.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from feedback.reports.model import (
    COLUMNS,
    PAUSE_BOUNCE_RATE,
    PAUSE_COMPLAINT_RATE,
    REVIEW_BOUNCE_RATE,
    REVIEW_COMPLAINT_RATE,
    Hour,
    Report,
    percent,
    rate_text,
    review_lines,
    standings,
)
from relay.timeutil import to_text

e = html.escape
PERMANENT_COLOUR = "#c0392b"
OTHER_BOUNCE_COLOUR = "#eba59e"
COMPLAINT_COLOUR = "#e67e22"
CHART_WIDTH = 960
CHART_HEIGHT = 260
CHART_PAD = 40
OFF_CHART = 4.0  # a review line this many times above the tallest bar is named, not drawn

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.n { text-align: right; }
tr.Complaint td { background: #fff6ec; }
tr.Permanent td { background: #fdeeee; }
tr.st-review td { background: #fff3cd; }
tr.st-pause td { background: #f8d7da; font-weight: bold; }
p.note { font-size: 12px; color: #555; max-width: 60em; }
a.export { font-weight: bold; }
"""


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def svg_chart(buckets: Sequence[Hour], lines: tuple[float, float] | None = None) -> str:
    """Bars per hour (bounces, permanent ones darker; complaints beside them) and the review lines.

    `lines` is (bounces, complaints) per hour at SES's review rates (model.review_lines).
    """
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    plot_w, plot_h = width - 2 * pad, height - pad - 60
    peak = max((max(h.bounces, h.complaints) for h in buckets), default=0)
    top = float(max(peak, 1))
    for level in lines or ():
        if level <= OFF_CHART * max(peak, 1):
            top = max(top, level)
    n = max(len(buckets), 1)
    step = plot_w / n
    bar = max(step * 0.4, 1.0)
    base = pad + plot_h
    label_every = max(1, -(-n // 12))  # at most a dozen hour labels
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="bounces and complaints per hour">',
        f'<line x1="{pad}" y1="{base}" x2="{pad + plot_w}" y2="{base}" stroke="#888"/>',
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="11" text-anchor="end">{_num(top)}</text>',
        f'<text x="{pad - 4}" y="{base}" font-size="11" text-anchor="end">0</text>',
    ]

    def rect(x: float, count: int, below: float, colour: str, title: str) -> float:
        h = plot_h * count / top
        parts.append(
            f'<rect x="{x:.1f}" y="{below - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{e(title)}</title></rect>"
        )
        return below - h

    for i, hour in enumerate(buckets):
        x = pad + i * step + (step - 2 * bar) / 2
        when = f"{hour.start:%Y-%m-%d %H:00} UTC"
        y = base
        if hour.permanent:
            y = rect(x, hour.permanent, y, PERMANENT_COLOUR, f"{when}: {hour.permanent} permanent bounces")
        other = hour.bounces - hour.permanent
        if other:
            rect(x, other, y, OTHER_BOUNCE_COLOUR, f"{when}: {other} transient or undetermined bounces")
        if hour.complaints:
            rect(x + bar, hour.complaints, base, COMPLAINT_COLOUR, f"{when}: {hour.complaints} complaints")
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{base + 14}" font-size="10" '
                f'text-anchor="middle">{e(hour.start.strftime("%H:00"))}</text>'
            )
    legend_y = height - 24
    legend = ((PERMANENT_COLOUR, "permanent bounces"), (OTHER_BOUNCE_COLOUR, "other bounces"),
              (COMPLAINT_COLOUR, "complaints"))  # fmt: skip
    for k, (colour, name) in enumerate(legend):
        x = pad + 150 * k
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{name}</text>')
    if lines is not None:
        names = (
            (lines[0], PERMANENT_COLOUR, f"bounce review line ({percent(REVIEW_BOUNCE_RATE)})"),
            (lines[1], COMPLAINT_COLOUR, f"complaint review line ({percent(REVIEW_COMPLAINT_RATE)})"),
        )
        for k, (level, colour, name) in enumerate(names):
            dash = f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"'
            label = f"{name}: {_num(level)} per hour"
            if level <= top:
                y = base - plot_h * level / top
                parts.append(
                    f'<line class="review" x1="{pad}" y1="{y:.1f}" x2="{pad + plot_w}" y2="{y:.1f}" {dash}/>'
                )
            else:
                label += ", above this chart"
            x = pad + 300 * k
            parts.append(f'<line x1="{x}" y1="{height - 10}" x2="{x + 24}" y2="{height - 10}" {dash}/>')
            parts.append(f'<text x="{x + 30}" y="{height - 6}" font-size="11">{e(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def chart_note(report: Report) -> str:
    lines = review_lines(report)
    if lines is None:
        return (
            '<p class="note">No sends were counted in this window, so the chart has no review '
            "lines: a rate needs sends.</p>"
        )
    hours = (report.until - report.since).total_seconds() / 3600
    return (
        f'<p class="note">Dashed lines: SES\'s review rates ({percent(REVIEW_BOUNCE_RATE)} permanent '
        f"bounces, {percent(REVIEW_COMPLAINT_RATE)} complaints per recipient sent) applied to this "
        f"window's average hour ({report.overall.sent} sent in {hours:g} hours). SES judges a rate "
        "over a representative volume, not hour by hour: a bar above its line is an hour that, kept "
        "up all window, would put the account under review. Transient and undetermined bounces do "
        "not count towards SES's bounce rate.</p>"
    )


def summary_table(report: Report) -> str:
    heads = ("class", "sent", "bounces", "permanent", "transient", "undetermined", "complaints",
             "bounce rate", "complaint rate")  # fmt: skip
    out = ['<table id="summary"><thead><tr>' + "".join(f"<th>{h}</th>" for h in heads)]
    out.append("</tr></thead><tbody>")
    for s in report.summary:
        nums = (s.sent, s.bounces, s.permanent, s.transient, s.undetermined, s.complaints)
        out.append(
            f"<tr><td>{e(s.scope)}</td>"
            + "".join(f'<td class="n">{v}</td>' for v in nums)
            + f'<td class="n">{rate_text(s.bounce_rate)}</td>'
            + f'<td class="n">{rate_text(s.complaint_rate)}</td></tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def standing_table(report: Report) -> str:
    """Per class: each rate against SES's review line, and the verdict."""
    out = [
        f'<p class="note">SES reviews an account at a {percent(REVIEW_BOUNCE_RATE)} bounce rate '
        f"(permanent bounces per recipient sent) or a {percent(REVIEW_COMPLAINT_RATE)} complaint rate, "
        f"and may pause its sending at {percent(PAUSE_BOUNCE_RATE)} / {percent(PAUSE_COMPLAINT_RATE)}. "
        "It judges rates over a representative volume: with few sends one event moves a rate far.</p>",
        '<table id="standing"><thead><tr><th>class</th><th>sent</th><th>standing</th>'
        "<th>bounce rate</th><th>complaint rate</th></tr></thead><tbody>",
    ]
    for st in standings(report):
        if st.level == "no sends":
            cells = '<td colspan="2">no sends counted in the window: no rate to judge</td>'
        else:
            cells = f"<td>{e(st.bounce)}</td><td>{e(st.complaint)}</td>"
        out.append(
            f'<tr class="st-{st.level.replace(" ", "-")}"><td>{e(st.scope)}</td><td class="n">{st.sent}</td>'
            f"<td>{e(st.level)}</td>{cells}</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _opening(report: Report) -> list[str]:
    """The document's head, the heading and the window's tally: the page and the mail
    open alike, so a reader knows one from the other only by what follows."""
    since, until = to_text(report.since), to_text(report.until)
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(f'ses-relay report {since} to {until}')}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>ses-relay: bounces and complaints</h1>",
        f"<p>From {e(since)} to {e(until)} (UTC): {report.overall.bounces} bounce(s), "
        f"{report.overall.complaints} complaint(s).</p>",
    ]


def export_link(href: str) -> str:
    return (
        f'<p><a class="export" href="{e(href, quote=True)}">Export to Excel</a> '
        "(every row in sheet Events; totals, standing and hours in sheet Summary)</p>"
    )


def html_page(
    report: Report, *, max_rows: int | None = None, xlsx_href: str | None = None,
    more_rows_in: str = "the spreadsheet",
) -> str:  # fmt: skip
    """The page: summary, standing against SES's lines, hourly chart, then the rows (all, or max_rows).

    `xlsx_href` is where "Export to Excel" points: a relative path beside a local file,
    or a presigned URL for a published page (a relative link from a presigned page
    would reach the spreadsheet without a signature, and a private bucket refuses that).
    """
    out = _opening(report)
    if xlsx_href:
        out.append(export_link(xlsx_href))
    out += ["<h2>Summary</h2>", summary_table(report)]
    out += ["<h2>Against SES's review lines</h2>", standing_table(report)]
    out += ["<h2>Per hour</h2>", svg_chart(report.hourly, review_lines(report)), chart_note(report)]
    shown = report.rows if max_rows is None else report.rows[:max_rows]
    out.append('<h2>Events</h2><table id="events"><thead><tr>')
    out.append("".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>")
    for row in shown:
        out.append(
            f'<tr class="{e(row.type)}">' + "".join(f"<td>{e(v)}</td>" for v in row.values()) + "</tr>"
        )
    out.append("</tbody></table>")
    if len(shown) < len(report.rows):
        out.append(f"<p>{len(report.rows) - len(shown)} more row(s) in {e(more_rows_in)}.</p>")
    if not report.rows:
        out.append("<p>No bounces or complaints in this window.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def mail_html(report: Report, *, page_url: str, xlsx_url: str, expires: datetime) -> str:
    """The published report's mail: the summary and standing at a glance, links to the rest."""
    out = _opening(report)
    out += [
        f'<p><a class="dashboard" href="{e(page_url, quote=True)}">Open the dashboard</a> '
        "(chart per hour and every row)</p>",
        export_link(xlsx_url),
        f'<p class="note">The links work until {e(to_text(expires))} UTC.</p>',
        "<h2>Summary</h2>", summary_table(report),
        "<h2>Against SES's review lines</h2>", standing_table(report),
        "</body></html>",
    ]  # fmt: skip
    return "\n".join(out) + "\n"
