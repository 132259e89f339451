"""``/api/v1/webhooks/`` (TRIGGERS.md, "Webhooks"): thin over ``triggers.webhooks``."""

from __future__ import annotations

from flask import Response, request
from flask_appbuilder.api import BaseApi, expose, protect, safe

from app.api_support import call_service, json_body
from app.errors import parse
from app.extensions import db
from app.security.actor import Actor
from capability.triggers import webhooks
from capability.triggers.api import PageIn


class WebhookApi(BaseApi):
    resource_name = "webhooks"
    class_permission_name = "Webhooks"
    method_permission_name = {
        "get_list": "read", "get": "read", "deliveries": "read",
        "post": "write", "put": "write", "delete": "write", "rotate": "write",
    }
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """Webhooks of your teams (filter: workflow).
        ---
        get:
          responses:
            200: {description: "count and result: webhooks (their URLs shortened)"}
        """

        def run(actor: Actor) -> Response:
            found = webhooks.list_webhooks(db.session, actor, request.args.get("workflow"))
            return self.response(200, count=len(found),
                                 result=[webhooks.webhook_dict(w) for w in found])

        return call_service("read", "webhook", None, run)

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str) -> Response:
        """One webhook (its URL shortened: the token is shown once).
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the webhook}
            404: {description: not found}
        """
        return call_service("read", "webhook", pk, lambda actor: self.response(
            200, id=pk, result=webhooks.webhook_dict(
                webhooks.get_webhook(db.session, actor, pk))))

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a webhook (Author): the answer has its whole URL and token, once.
        ---
        post:
          responses:
            201: {description: "created, with url and token"}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(webhooks.WebhookIn, json_body())
            hook, token = webhooks.create_webhook(db.session, actor, data)
            return self.response(201, id=hook.id, result=webhooks.webhook_dict(hook, token))

        return call_service("create", "webhook", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Replace a webhook (its token stays).
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: updated}
            404: {description: not found}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(webhooks.WebhookIn, json_body())
            hook = webhooks.update_webhook(db.session, actor, pk, data)
            return self.response(200, id=pk, result=webhooks.webhook_dict(hook))

        return call_service("update", "webhook", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete a webhook: its URL answers 404 from now on.
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            webhooks.delete_webhook(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "webhook", pk, run)

    @expose("/<pk>/rotate-token", methods=["POST"])
    @protect()
    @safe
    def rotate(self, pk: str) -> Response:
        """A new token (shown once); the old URL answers 404 from now on.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: "the webhook, with its new url and token"}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            hook, token = webhooks.rotate_token(db.session, actor, pk)
            return self.response(200, id=pk, result=webhooks.webhook_dict(hook, token))

        return call_service("rotate-token", "webhook", pk, run)

    @expose("/<pk>/deliveries", methods=["GET"])
    @protect()
    @safe
    def deliveries(self, pk: str) -> Response:
        """The delivery log, newest first (page, page_size).
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: "count, and result: the log rows"}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            page = parse(PageIn, dict(request.args))
            total, rows = webhooks.deliveries(db.session, actor, pk, page.page_size,
                                              page.page * page.page_size)
            return self.response(200, count=total,
                                 result=[webhooks.delivery_dict(r) for r in rows])

        return call_service("read", "webhook", pk, run)
