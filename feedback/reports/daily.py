"""The daily report mail: once a UTC day, from `[report] hour`, to `[report] daily_to`.

With `[report] s3_uri` the page and the spreadsheet go to the bucket and the mail
carries the summary, the standing against SES's review lines and signed links to
both; without it (or when the bucket refuses them) the mail is the page itself,
its first rows in the body and the XLSX attached. The message goes onto the
relay's own spool, so it is DKIM-signed, sent through SES and retried like
any other mail. The day last sent is kept in a small file in the data dir, written
only after the message is committed to the spool, so a restart neither sends the
day's report twice nor skips it: a relay that was down at the hour sends it when it
comes back the same day.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from feedback.notices.notifier import MailingLoop
from feedback.reports.html import html_page, mail_html
from feedback.reports.publish import TEMPORARY_CREDENTIALS, Published, PublishError, S3Publisher
from feedback.reports.report import Report, collect, standing_text, summary_text
from feedback.reports.xlsx import XLSX_CONTENT_TYPE, xlsx_bytes
from relay.intake.pickup import spool_message
from relay.ops import services
from relay.store import StoreError

log = logging.getLogger("ses_relay.report")

STATE_FILE = "report-daily.last"
WINDOW = timedelta(hours=24)
POLL_SECONDS = services.every("daily-report")
MAX_BODY_ROWS = 500  # the HTML body stays readable; every row is in the attachment


def due(now: datetime, hour: int, last_sent: date | None) -> bool:
    """Is today's report owed? From `hour` UTC on, unless already sent today (pure)."""
    return now.hour >= hour and (last_sent is None or last_sent < now.date())


def read_last(path: Path) -> date | None:
    try:
        return date.fromisoformat(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # never sent, or a damaged file: sending once more beats never again


def write_last(path: Path, day: date) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(day.isoformat() + "\n", encoding="ascii")
    tmp.replace(path)


def compose(
    report: Report, *, sender: str, to: tuple[str, ...], now: datetime,
    published: Published | None = None, publish_error: str = "",
) -> bytes:  # fmt: skip
    """The report mail: links to the published report, or the page itself with the XLSX attached."""
    o = report.overall
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = (
        f"ses-relay daily report {now:%Y-%m-%d}: {o.bounces} bounce(s), {o.complaints} complaint(s)"
    )
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    text = summary_text(report) + "\n\n" + standing_text(report) + "\n\n"
    if published is not None:
        expires = f"{published.expires:%Y-%m-%d %H:%M} UTC"
        msg.set_content(
            text + f"The dashboard (chart per hour, every row):\n{published.html_url}\n\n"
            f"Export to Excel:\n{published.xlsx_url}\n\nThe links work until {expires}.\n"
        )
        msg.add_alternative(
            mail_html(report, page_url=published.html_url, xlsx_url=published.xlsx_url,
                      expires=published.expires),
            subtype="html",
        )  # fmt: skip
        return bytes(msg)
    if publish_error:
        text += f"The report could not be published ({publish_error}); the files are attached instead.\n\n"
    msg.set_content(text + "Every row is in the attached spreadsheet.\n")
    page = html_page(report, max_rows=MAX_BODY_ROWS, more_rows_in="the attached spreadsheet")
    msg.add_alternative(page, subtype="html")
    maintype, _, subtype = XLSX_CONTENT_TYPE.partition("/")
    msg.add_attachment(
        xlsx_bytes(report), maintype=maintype, subtype=subtype,
        filename=f"ses-relay-report-{now:%Y-%m-%d}.xlsx",
    )  # fmt: skip
    return bytes(msg)


class DailyReport(MailingLoop):
    """The worker's task that mails the report when it is due; it looks every POLL_SECONDS."""

    # Until set on the instance: the day last sent, kept in memory too so that an
    # unwritable state file does not repeat the report; the S3 client, made once.
    _sent: date | None = None
    _publisher: S3Publisher | None = None

    @property
    def state(self) -> Path:
        """The file that keeps the day last sent across restarts."""
        return self.data_dir / STATE_FILE

    async def send_if_due(self) -> bool:
        """Send today's report if it is due; True when one was spooled."""
        cfg = self.config.report
        now = self.clock()
        last = max((d for d in (read_last(self.state), self._sent) if d is not None), default=None)
        if not cfg.daily_to or not due(now, cfg.hour, last):
            return False
        report = await collect(self.store, since=now - WINDOW, until=now)
        published, error = None, ""
        if cfg.s3_uri:
            try:
                published = await asyncio.to_thread(self._publish, report, now)
            except PublishError as exc:
                error = str(exc)
                log.error("daily report not published, attaching the files instead: %s", exc)
        raw = compose(
            report, sender=self.sender, to=cfg.daily_to, now=now, published=published, publish_error=error
        )
        klass = await self._open_class()
        sid = await spool_message(
            self.store, self.config, raw, self.sender, cfg.daily_to, origin="report", klass=klass
        )
        self._sent = now.date()
        self.wake_sender()
        write_last(self.state, now.date())
        log.info(
            "daily report spooled as %s to %s (%d row(s))", sid, ", ".join(cfg.daily_to), len(report.rows)
        )
        return True

    def _publish(self, report: Report, now: datetime) -> Published:
        """Upload the day's report (blocking: runs in a thread); the client is made once."""
        if self._publisher is None:
            self._publisher = S3Publisher.from_config(self.config)
        published = self._publisher.publish(report, now=now)
        log.info(
            "daily report published to %s and %s, links valid until %s",
            published.html_uri, published.xlsx_uri, published.expires.strftime("%Y-%m-%d %H:%M UTC"),
        )  # fmt: skip
        if published.temporary_credentials:
            log.warning(TEMPORARY_CREDENTIALS)
        return published

    async def _open_class(self) -> str:
        """The default class, unless the guard paused it: the report matters most on such a day."""
        paused = {k for k, s in (await self.store.class_states()).items() if s.paused}
        if self.config.default_class not in paused:
            return self.config.default_class
        return next((k for k in self.config.classes if k not in paused), self.config.default_class)

    async def tick(self) -> float:
        try:
            await self.send_if_due()
        except (StoreError, OSError) as exc:
            log.error("daily report not sent, will retry: %s", exc)
        return POLL_SECONDS
