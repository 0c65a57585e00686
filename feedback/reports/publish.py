"""Publishing the report to S3: the page and the spreadsheet side by side, and links to both.

`[report] s3_uri = "s3://bucket/prefix/"` puts a day's report at
`prefix/YYYY-MM-DD/report.html` and `.../report.xlsx` (the UTC day the window ends)
and signs a GET link to each for `[report] link_expiry`. The bucket stays private:
whoever holds a link reads that one object until it expires, nobody else reads it.

The page's "Export to Excel" points to the spreadsheet's own signed link, not to
`report.xlsx` beside it: a relative link from a signed page resolves to the
spreadsheet's plain URL, with no signature, and a private bucket refuses that.

The S3 client is boto3's with botocore's usual endpoint resolution
(AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL); `[ses] endpoint_url` is SES's alone.
The calls block: async callers run `publish` in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from feedback.reports.html import html_page
from feedback.reports.model import Report
from feedback.reports.xlsx import XLSX_CONTENT_TYPE, xlsx_bytes
from relay.config import PRESIGN_LIMIT, Config
from relay.timeutil import to_text

HTML_CONTENT_TYPE = "text/html; charset=utf-8"
PAGE_NAME = "report.html"
SHEET_NAME = "report.xlsx"
TEMPORARY_CREDENTIALS = (
    "the report links were signed with temporary credentials (a role's session): they stop "
    "working when that session expires, which may be before [report] link_expiry"
)
NOT_CONFIGURED = 'set [report] s3_uri = "s3://BUCKET/PREFIX/" in the configuration to publish'


class PublishError(Exception):
    """The report could not be put in the bucket; the message says what S3 or botocore answered."""


@dataclass(frozen=True)
class Published:
    bucket: str
    html_key: str
    xlsx_key: str
    html_url: str  # presigned GET
    xlsx_url: str  # presigned GET
    expires: datetime
    temporary_credentials: bool  # signed with a session token: the links die with it

    @property
    def html_uri(self) -> str:
        return f"s3://{self.bucket}/{self.html_key}"

    @property
    def xlsx_uri(self) -> str:
        return f"s3://{self.bucket}/{self.xlsx_key}"

    def lines(self) -> list[str]:
        """What `ses-relay report --publish` prints: where it went, then the page's link alone."""
        until = self.expires.strftime("%Y-%m-%d %H:%M UTC")
        where = f"published {self.html_uri} and {self.xlsx_uri}; the link works until {until}:"
        return [where, self.html_url]

    def as_json(self) -> dict[str, Any]:
        return {
            "html": self.html_uri, "xlsx": self.xlsx_uri, "html_url": self.html_url,
            "xlsx_url": self.xlsx_url, "expires": to_text(self.expires),
            "temporary_credentials": self.temporary_credentials,
        }  # fmt: skip


def report_keys(prefix: str, day: date) -> tuple[str, str]:
    """The page's and the spreadsheet's keys for a day (pure)."""
    folder = f"{prefix}{day.isoformat()}/"
    return folder + PAGE_NAME, folder + SHEET_NAME


class S3Publisher:
    """Puts a report's page and spreadsheet in the bucket and signs links to them."""

    def __init__(self, *, bucket: str, prefix: str, region: str, expiry: timedelta) -> None:
        import boto3  # here, not at import: the CLI's other commands need not pay for it
        from botocore.config import Config as BotoConfig

        if not timedelta(seconds=1) <= expiry <= PRESIGN_LIMIT:
            raise ValueError(f"link expiry must be between 1 second and 7 days, not {expiry}")
        self.bucket = bucket
        self.prefix = prefix
        self.expiry = expiry
        self._session = boto3.session.Session()
        self._client: Any = self._session.client(
            "s3",
            region_name=region,
            config=BotoConfig(
                signature_version="s3v4",  # presigned URLs with an expiry of up to 7 days
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=60,
            ),
        )

    @classmethod
    def from_config(cls, config: Config) -> S3Publisher:
        cfg = config.report
        if not cfg.s3_uri:
            raise ValueError(NOT_CONFIGURED)
        region = cfg.s3_region or config.ses.region
        return cls(bucket=cfg.s3_bucket, prefix=cfg.s3_prefix, region=region, expiry=cfg.link_expiry)

    def publish(self, report: Report, *, now: datetime) -> Published:
        """Upload the spreadsheet, then the page that links to it; return both links."""
        day = report.until.date()
        html_key, xlsx_key = report_keys(self.prefix, day)
        try:
            self._put(
                xlsx_key, xlsx_bytes(report), XLSX_CONTENT_TYPE,
                disposition=f'attachment; filename="ses-relay-report-{day.isoformat()}.xlsx"',
            )  # fmt: skip
            xlsx_url = self._sign(xlsx_key)
            page = html_page(report, xlsx_href=xlsx_url).encode("utf-8")
            self._put(html_key, page, HTML_CONTENT_TYPE, disposition="inline")
            html_url = self._sign(html_key)
        except (BotoCoreError, ClientError) as exc:
            raise PublishError(f"s3://{self.bucket}/{html_key.rpartition('/')[0]}/: {exc}") from exc
        return Published(
            self.bucket, html_key, xlsx_key, html_url, xlsx_url, now + self.expiry, self._temporary()
        )

    def _put(self, key: str, body: bytes, content_type: str, *, disposition: str) -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
            ContentDisposition=disposition,
        )  # fmt: skip

    def _sign(self, key: str) -> str:
        return str(
            self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=int(self.expiry.total_seconds()),
            )
        )

    def _temporary(self) -> bool:
        """Were the links signed with session credentials (a role), which expire before 7 days do?"""
        credentials = self._session.get_credentials()
        return bool(credentials is not None and credentials.get_frozen_credentials().token)
