"""Experiment: the worker's SendRawEmail as one signed request, not a boto3 call.

BotoSes.send_raw goes through boto3's whole machinery (parameter validation,
serialisation, event hooks, the endpoint resolver, botocore's HTTP session and
response parser). bench/ses_call.py's LeanSes prototype makes the same request
(botocore's SigV4 signer, one persistent http.client connection per thread, the
MessageId read with a regex). Here it replaces send_raw in the worker (API v1 only;
no error classification: the stand-in always answers 200).
"""

import sys

if "worker" in sys.argv:
    from bench.ses_call import LeanSes
    from relay.sending import ses_client

    _init = ses_client.BotoSes.__init__

    def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
        _init(self, **kwargs)
        self._lean = LeanSes(self.endpoint_url, kwargs.get("region") or "us-east-1")

    def send_raw(self, request):  # type: ignore[no-untyped-def]
        return self._lean.send_raw(request)

    ses_client.BotoSes.__init__ = __init__
    ses_client.BotoSes.send_raw = send_raw
