"""The composition engine: ordering, refusals, all-or-nothing registration."""

from __future__ import annotations

import pytest
from flask_appbuilder.security.sqla.models import PermissionView, ViewMenu
from sqlalchemy import select

from app import create_app
from app.composition import CompositionError
from app.composition.engine import order
from app.extensions import db
from tests.support import capabilities as fx
from tests.support.app import api_token, auth, make_config

REF = "tests.support.capabilities:"


def build(service_urls, *names):
    # The real capability stays installed: every start re-syncs the roles to the rules of
    # the capabilities it has, and the other tests' users need the workflow grants.
    refs = ["capability.blueprint:capability", *[REF + n for n in names]]
    return create_app(make_config(service_urls, APG_CAPABILITIES=refs))


def test_dependencies_register_first(app, service_urls):
    fx.ORDER.clear()
    application = build(service_urls, "gamma", "beta", "alpha")
    assert fx.ORDER == ["alpha", "beta", "gamma"]
    with application.app_context():
        from app.composition.engine import get_composition

        ids = [item.id for item in get_composition(application).loaded]
    assert ids == ["platform", "alpha", "beta", "gamma", "workflow"]


def test_order_is_independent_of_declaration_order():
    assert [c.meta.id for c in order([fx.gamma, fx.beta, fx.alpha, _platform()])] == [
        "platform", "alpha", "beta", "gamma"
    ]


def _platform():
    from app.platform import capability

    return capability


def test_missing_dependency_is_refused_naming_both(app, service_urls):
    with pytest.raises(CompositionError) as info:
        build(service_urls, "needs_missing")
    assert "'needs_missing' depends on 'nowhere'" in str(info.value)


def test_cycle_is_refused_naming_the_cycle(app, service_urls):
    with pytest.raises(CompositionError) as info:
        build(service_urls, "cycle_a", "cycle_b")
    assert "cycle_a -> cycle_b -> cycle_a" in str(info.value)


def test_invalid_metadata_is_refused():
    from pydantic import ValidationError

    from app.composition import Capability

    with pytest.raises(ValidationError):
        Capability.build(lambda reg: None, id="Bad Id", name="x", version="1")


def _leftovers(application, name: str):
    with application.app_context():
        views = [v for v in application.extensions["appbuilder"].baseviews
                 if type(v).__name__ in {"BrokenView", "ExplodingApi"}]
        rules = [r.rule for r in application.url_map.iter_rules()
                 if r.rule.startswith(("/broken", "/api/v1/exploding"))]
        perms = db.session.execute(
            select(PermissionView).join(ViewMenu).where(
                ViewMenu.name.in_(["BrokenView", "Broken page", "Broken", "ExplodingApi"])
            )
        ).scalars().all()
        menu = [item.name for item in application.extensions["appbuilder"].menu.menu]
        return views, rules, perms, menu


@pytest.mark.parametrize("name", ["fails", "apply_fails"])
def test_failed_registration_leaves_nothing_behind(app, service_urls, name):
    # "fails" raises inside register(); "apply_fails" registers fine but FAB blows up
    # half way through applying it (after its first view went in).
    application = build(service_urls, "alpha", "fails", "apply_fails", "after_fails")
    views, rules, perms, menu = _leftovers(application, name)
    assert views == []
    assert rules == []
    assert perms == []
    assert "Broken" not in menu
    with application.app_context():
        from app.composition.engine import get_composition

        comp = get_composition(application)
        assert comp.get(name).status == "failed"
        assert comp.get("alpha").status == "registered"
        assert comp.get("after_fails").status == "failed"
        assert "dependency failed" in comp.get("after_fails").error
    client = application.test_client()
    assert client.get("/broken/").status_code == 404
    assert client.get("/alpha/").status_code in (302, 401, 403)  # exists, needs login


def test_capabilities_api_lists_versions_and_health(client, factory):
    admin = factory.user("Admin")
    r = client.get("/api/v1/capabilities/", headers=auth(api_token(client, admin["username"])))
    assert r.status_code == 200
    items = {item["id"]: item for item in r.get_json()["result"]}
    assert items["platform"]["status"] == "registered"
    from capability.blueprint import capability

    assert items["workflow"]["version"] == capability.meta.version
    assert items["workflow"]["health"]["status"] == "ok"
    assert items["workflow"]["depends_on"] == ["platform"]
