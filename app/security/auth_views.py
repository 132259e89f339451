"""The form login and logout: a lockout is a clear 429 page, and logout is a POST.

Same class name as FAB's: FAB derives endpoints (``AuthDBView.login``,
``AuthDBView.logout``) from it, and its templates and our audit hook name them.
"""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, request
from flask_appbuilder.security.forms import LoginForm_db
from flask_appbuilder.security.views import AuthDBView as FabAuthDBView
from flask_appbuilder.views import expose
from flask_login import current_user

from app.security import login_limits
from app.security.login_limits import LoginLocked
from app.security.request import client_ip


class AuthDBView(FabAuthDBView):
    @expose("/login/", methods=["GET", "POST"])
    def login(self) -> Any:
        try:
            response = super().login()
        except LoginLocked as exc:
            return self._locked(exc)
        if request.method == "POST" and not current_user.is_authenticated:
            # The failure just refused may have started a lockout: say so now, not
            # after one more try ("Invalid login" alone invites typing again at once).
            try:
                login_limits.check(request.form.get("username"), client_ip())
            except LoginLocked as exc:
                return self._locked(exc)
        return response

    def _locked(self, exc: LoginLocked) -> Any:
        flash(str(exc), "danger")
        page = self.render_template(
            self.login_template, title=self.title, form=LoginForm_db(),
            appbuilder=self.appbuilder,
        )
        return page, 429, {"Retry-After": str(exc.retry_after)}

    @expose("/logout/", methods=["GET", "POST"])
    def logout(self) -> Any:
        """POST (with the CSRF token) logs out and revokes every session and token of
        the user; a GET only asks, so a link or an image cannot log anyone out."""
        if request.method == "POST":
            return super().logout()
        if g.user is None or not g.user.is_authenticated:
            return redirect(self.appbuilder.get_url_for_index)
        return self.render_template(
            "security/logout.html", title="Log out", appbuilder=self.appbuilder
        )
