"""Reliable forwarding: the transactional outbox, the retry policy, signed HTTP delivery,
the per-partner circuit breaker, and the worker that ties them together."""
