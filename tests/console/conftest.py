"""The JWT fixtures of tests/test_auth.py, for signing in to the console with a token."""

from tests.test_auth import jwt_http, rsa_keys

__all__ = ["jwt_http", "rsa_keys"]
