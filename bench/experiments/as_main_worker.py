"""Experiment: the worker and serve as they were before the lean SES client (the "before").

Run beside the relay as it is, in the same run, to measure what these changes give:
- SendRawEmail through boto3 (BotoSes) instead of LeanSes;
- the From header parsed with the email package for every message, DKIM keys or not;
- the header block parsed for X-SES-*-ARN headers in every message;
- serve loading dkimpy and cryptography for its start-time DKIM key check;
- the sender claiming only as many messages as it has free SES slots (claim_per_slot.py).
"""

import sys

if "worker" in sys.argv:
    import bench.experiments.claim_per_slot  # noqa: F401
    from relay.sending import dkim, sender, ses_lean
    from relay.sending.ses_client import BotoSes

    _init = ses_lean.LeanSes.__init__

    def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
        _init(self, **kwargs)
        url, concurrency = self.endpoint_url, kwargs["concurrency"]
        self._as_main = BotoSes(region=kwargs["region"], endpoint_url=url, api="v1", concurrency=concurrency)

    def send_raw(self, request):  # type: ignore[no-untyped-def]
        return self._as_main.send_raw(request)

    ses_lean.LeanSes.__init__ = __init__
    ses_lean.LeanSes.send_raw = send_raw
    sender.from_address = sender.parsed_from_address

    def spooled_arns(data):  # type: ignore[no-untyped-def]
        msg, found = sender.hdr.parse_raw(data), {}
        for header, key in (("X-SES-SOURCE-ARN", "source_arn"), ("X-SES-FROM-ARN", "from_arn"),
                            ("X-SES-RETURN-PATH-ARN", "return_path_arn")):  # fmt: skip
            value = sender.hdr.first(msg, header)
            if value:
                found[key] = value
        return found

    sender.spooled_arns = spooled_arns
    dkim.DkimKeys.has_keys = property(lambda self: True)

if "serve" in sys.argv:
    import relay.sending.dkim_sign  # noqa: F401
