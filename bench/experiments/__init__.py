"""Patches to try on the relay before making them: `bench/intake.py --relay-site FILE`.

Each module here is run as the sitecustomize of `serve` and its worker (Python
imports it at start, before the program), so it changes the running relay without
changing its code, and `intake.py` measures it beside the unchanged relay in the
same run. They are measuring devices, not code to ship: each says what the real
change would be.
"""
