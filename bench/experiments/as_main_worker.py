"""Experiment: the worker and serve as they were before the lean SES client (the "before").

Run beside the relay as it is, in the same run, to measure what these changes give:
- SendRawEmail through boto3 (BotoSes) instead of LeanSes;
- the From header parsed with the email package for every message, DKIM keys or not;
- serve loading dkimpy and cryptography for its start-time DKIM key check.
"""

import sys

if "worker" in sys.argv:
    from relay.sending import dkim, sender, ses_lean
    from relay.sending.ses_client import BotoSes

    def send_raw(self, request):  # type: ignore[no-untyped-def]
        boto = self.__dict__.get("_as_main")
        if boto is None:
            made = BotoSes(region=self._region, endpoint_url=self.endpoint_url, api="v1", concurrency=8)
            boto = self.__dict__.setdefault("_as_main", made)
        return boto.send_raw(request)

    ses_lean.LeanSes.send_raw = send_raw
    sender.from_address = sender.parsed_from_address
    dkim.DkimKeys.has_keys = property(lambda self: True)

if "serve" in sys.argv:
    import relay.sending.dkim_sign  # noqa: F401
