"""Strategies built on outside libraries (Optuna), behind the same ask/tell contract as the pure engine.
They may import those libraries, never transport, ZeroMQ or torch."""
