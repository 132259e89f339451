"""``POST /api/v1/security/login``: FAB's SecurityApi with a default provider and
400/422 answers for a malformed body.

FAB's handler loads the body with its own module-level schema, in which ``provider``
is optional but then read unconditionally (a body without it is a 500), and it
answers every validation problem with 400 and marshmallow's nested messages. The
handler below validates the body the way every other endpoint of ours does (400 for
a body that is not JSON, 422 with ``errors: [{path, message}]`` for the rest), then
authenticates through the security manager exactly as FAB does, so the audit of
logins (``ApgSecurityManager.auth_user_db``), the login limits (a lockout is a 429
with ``Retry-After``) and the rate limit on this blueprint stay as they are.
``/refresh`` is FAB's; the refresh token it takes is subject to revocation
(``app.security.revocation``) like every other credential.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_appbuilder.api import expose, safe
from flask_appbuilder.const import (
    API_SECURITY_ACCESS_TOKEN_KEY,
    API_SECURITY_PROVIDER_DB,
    API_SECURITY_PROVIDER_LDAP,
    API_SECURITY_REFRESH_TOKEN_KEY,
)
from flask_appbuilder.security.api import SecurityApi
from flask_appbuilder.security.utils import is_null_password
from flask_jwt_extended import create_access_token, create_refresh_token
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from app.api_support import json_body, json_error
from app.errors import ServiceError, ValidationFailed, parse
from app.security.login_limits import LoginLocked

DEFAULT_PROVIDER = API_SECURITY_PROVIDER_DB


class LoginBody(BaseModel):
    # Strict: a number is not a username and "yes" is not a boolean.
    model_config = ConfigDict(extra="forbid")

    username: StrictStr = Field(min_length=1)
    password: StrictStr = Field(min_length=1)
    provider: StrictStr = DEFAULT_PROVIDER
    refresh: StrictBool = False


class ApgSecurityApi(SecurityApi):
    def _providers(self) -> list[str]:
        """The providers this installation accepts (FAB's rule: only the configured
        AUTH_TYPE unless AUTH_API_LOGIN_ALLOW_MULTIPLE_PROVIDERS)."""
        sm = self.appbuilder.sm
        if sm.api_login_allow_multiple_providers:
            return [API_SECURITY_PROVIDER_DB, API_SECURITY_PROVIDER_LDAP]
        name = sm.auth_type_provider_name
        return [name] if name in (API_SECURITY_PROVIDER_DB, API_SECURITY_PROVIDER_LDAP) else []

    def _body(self) -> LoginBody:
        body = parse(LoginBody, json_body())
        allowed = self._providers()
        if body.provider not in allowed:
            expected = " or ".join(repr(p) for p in allowed) or "none (API login is off)"
            raise ValidationFailed("Invalid request", [
                {"path": "provider", "message": f"unknown provider {body.provider!r}: "
                                                f"expected {expected}"}])
        if is_null_password(body.password):
            raise ValidationFailed("Invalid request", [
                {"path": "password", "message": "must not be made of NUL characters"}])
        return body

    @expose("/login", methods=["POST"])
    @safe
    def login(self) -> Response:
        """Log in with a username and password; answers a JWT access token
        ---
        post:
          description: >-
            Authenticate and get a JWT access token (and a refresh token when
            `refresh` is true). `provider` defaults to `db`.
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [username, password]
                  additionalProperties: false
                  properties:
                    username:
                      type: string
                      minLength: 1
                      example: admin
                    password:
                      type: string
                      minLength: 1
                      example: complex-password
                    provider:
                      type: string
                      enum: [db, ldap]
                      default: db
                      description: the authentication provider; only the configured one is accepted
                    refresh:
                      type: boolean
                      default: false
                      description: also answer a refresh token
          responses:
            200:
              description: Authenticated
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      access_token: {type: string}
                      refresh_token: {type: string}
            400:
              description: the body is missing or is not JSON
            401:
              $ref: '#/components/responses/401'
            413:
              description: the body is larger than MAX_CONTENT_LENGTH
            422:
              description: >-
                the body is not an object, or a field is missing, of the wrong type,
                unknown, or names a provider that is not accepted; `errors` lists each
                one as {path, message}
            429:
              description: >-
                too many failed logins for this account or from this address (a
                lockout that doubles with each further failure and always expires;
                `Retry-After` says when to try again), or too many login requests
                from this address (AUTH_RATE_LIMIT)
        """
        try:
            body = self._body()
        except ServiceError as exc:
            return json_error(exc.status, exc.message, exc.errors)
        sm = self.appbuilder.sm
        try:
            if body.provider == API_SECURITY_PROVIDER_LDAP:
                user: Any = sm.auth_user_ldap(body.username, body.password)
            else:
                user = sm.auth_user_db(body.username, body.password)
        except LoginLocked as exc:
            response = json_error(429, str(exc))
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if not user:
            return self.response_401()
        tokens = {API_SECURITY_ACCESS_TOKEN_KEY: create_access_token(
            identity=str(user.id), fresh=True)}
        if body.refresh:
            tokens[API_SECURITY_REFRESH_TOKEN_KEY] = create_refresh_token(identity=str(user.id))
        return self.response(200, **tokens)
