"""A faithful mock of ``POST /v1/events`` for tests and local development (needs DRF)."""
