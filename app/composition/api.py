"""``GET /api/v1/capabilities/`` and the admin page that lists capabilities."""

from __future__ import annotations

from flask import Response, current_app
from flask_appbuilder import BaseView
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.security.decorators import has_access, permission_name

from app.composition.engine import get_composition


class CapabilityApi(BaseApi):
    resource_name = "capabilities"
    class_permission_name = "Capabilities"
    method_permission_name = {"get_list": "read"}
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """Installed capabilities with version, status and health.
        ---
        get:
          responses:
            200:
              description: capabilities
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      count: {type: integer}
                      result: {type: array, items: {type: object}}
        """
        items = [item.as_dict() for item in get_composition(current_app).loaded]
        return self.response(200, count=len(items), ids=[i["id"] for i in items], result=items)


class CapabilityView(BaseView):
    route_base = "/capabilities"
    default_view = "list"
    class_permission_name = "Capabilities"
    method_permission_name = {"list": "read"}

    @expose("/")
    @has_access
    @permission_name("read")
    def list(self) -> str:
        items = [item.as_dict() for item in get_composition(current_app).loaded]
        return self.render_template("composition/list.html", items=items)
