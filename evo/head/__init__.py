"""The head: drives a strategy through an evaluator, journaling every ask, result and tell.

May import transport (ZeroMQ, msgpack) and structlog; never torch or gpuworker.
"""
