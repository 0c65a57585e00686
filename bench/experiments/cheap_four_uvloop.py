"""Experiment: the four patches of cheap_four, on uvloop's event loop."""

import asyncio

import uvloop

from bench.experiments import cheap_four  # noqa: F401

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
