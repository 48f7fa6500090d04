"""Webhook and API authentication: a bearer token or HTTP basic auth, compared in constant time."""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Credentials:
    bearer_token: str | None = None
    basic_user: str | None = None
    basic_password: str | None = None
    allow_unauthenticated: bool = False

    def __post_init__(self) -> None:
        if (self.basic_user is None) != (self.basic_password is None):
            raise ValueError("basic auth needs both a user and a password")
        if not self.configured and not self.allow_unauthenticated:
            raise ValueError("no credential configured: set --bearer-token-file (or --basic-auth-user and "
                             "--basic-auth-password-file), or pass --insecure-no-auth for local use only")

    @property
    def configured(self) -> bool:
        return bool(self.bearer_token) or self.basic_user is not None

    def accepts(self, authorization: str | None, query_token: str | None = None) -> bool:
        """``Authorization`` header, or (for browsers' WebSockets) an ``access_token`` query value."""
        if not self.configured:
            return self.allow_unauthenticated
        if query_token is not None and self.bearer_token:
            return hmac.compare_digest(query_token.encode(), self.bearer_token.encode())
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.bearer_token:
            return hmac.compare_digest(value.strip().encode(), self.bearer_token.encode())
        if scheme.lower() == "basic" and self.basic_user is not None and self.basic_password is not None:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII input
                return False
            user_ok = hmac.compare_digest(user.encode(), self.basic_user.encode())
            password_ok = hmac.compare_digest(password.encode(), self.basic_password.encode())
            return user_ok and password_ok
        return False
