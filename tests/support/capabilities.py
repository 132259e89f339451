"""Capabilities used by the composition tests (imported by reference, like real ones)."""

from __future__ import annotations

from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.security.decorators import has_access

from app.composition import Capability, Registrar

ORDER: list[str] = []


class AlphaView(BaseView):
    route_base = "/alpha"
    default_view = "index"

    @expose("/")
    @has_access
    def index(self) -> str:
        return "alpha"


class AlphaApi(BaseApi):
    resource_name = "alpha"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get(self):  # type: ignore[no-untyped-def]
        return self.response(200, message="alpha")


class BrokenView(BaseView):
    route_base = "/broken"
    default_view = "index"

    @expose("/")
    @has_access
    def index(self) -> str:
        return "broken"


class ExplodingApi(BaseApi):
    """Blows up while FAB registers it: after AlphaView/BrokenView went in."""

    resource_name = "exploding"

    def create_blueprint(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("blueprint factory exploded")


def _register(name: str):  # type: ignore[no-untyped-def]
    def register(reg: Registrar) -> None:
        ORDER.append(name)

    return register


def register_alpha(reg: Registrar) -> None:
    ORDER.append("alpha")
    reg.add_view(AlphaView, "Alpha page", category="Alpha")
    reg.add_api(AlphaApi)


def register_fails(reg: Registrar) -> None:
    reg.add_view(BrokenView, "Broken page", category="Broken")
    raise RuntimeError("register failed on purpose")


def register_apply_fails(reg: Registrar) -> None:
    reg.add_view(BrokenView, "Broken page", category="Broken")
    reg.add_api(ExplodingApi)


alpha = Capability.build(register_alpha, id="alpha", name="Alpha", version="1.0.0",
                         depends_on=("platform",))
beta = Capability.build(_register("beta"), id="beta", name="Beta", version="1.0.0",
                        depends_on=("alpha",))
gamma = Capability.build(_register("gamma"), id="gamma", name="Gamma", version="1.0.0",
                         depends_on=("beta", "alpha"))
needs_missing = Capability.build(_register("x"), id="needs_missing", name="X",
                                 version="1.0.0", depends_on=("nowhere",))
cycle_a = Capability.build(_register("ca"), id="cycle_a", name="A", version="1.0.0",
                           depends_on=("cycle_b",))
cycle_b = Capability.build(_register("cb"), id="cycle_b", name="B", version="1.0.0",
                           depends_on=("cycle_a",))
fails = Capability.build(register_fails, id="fails", name="Fails", version="1.0.0")
apply_fails = Capability.build(register_apply_fails, id="apply_fails", name="Apply fails",
                               version="1.0.0")
def register_after(reg: Registrar) -> None:
    ORDER.append("after")


after_fails = Capability.build(register_after, id="after_fails", name="After",
                               version="1.0.0", depends_on=("fails", "apply_fails"))
