"""Masking beats the common transforms of a secret, not only its exact value (issue 11,
item 5): what a Viewer reads of a task's output carries ``***`` for each of them."""

from __future__ import annotations

import pytest

from app.extensions import db
from app.security.actor import SYSTEM
from capability.secrets import service as secrets
from tests.support.app import api_token, auth
from tests.support.runs import run_to_end

# Mixed case, a space and a slash: every transform differs from the value itself.
VALUE = "Tok 7f3a/9C1e-Very+Secret"
FORMS = ("base64", "base64_nopad", "base64url", "base64url_nopad", "basic", "hex", "HEX",
         "url", "url_plus", "upper", "lower", "reversed", "reversed_upper")


@pytest.fixture()
def viewer(client, factory, op):
    user = factory.user("Viewer", teams=[op["team"]])
    return auth(api_token(client, user["username"]))


def test_every_common_transform_of_a_secret_is_masked_for_a_viewer(app, client, op, viewer):
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config, secrets.SecretIn(
            team=op["team"]["name"], name="api_token", value=VALUE))
        db.session.remove()
    run = run_to_end(app, client, op, [
        {"id": "leak", "type": "python",
         "with": {"callable": "tests.support.callables:encodings",
                  "kwargs": {"value": "{{ secrets.api_token }}"}}},
        {"id": "inline", "type": "transform",
         "with": {"value": {"upper": "{{ secrets.api_token | upper }}",
                            "reversed": "{{ secrets.api_token | reverse }}",
                            "url": "{{ secrets.api_token | urlencode }}"}}},
    ])
    assert run["status"] == "succeeded", run
    got = client.get(f"/api/v1/runs/{run['id']}", headers=viewer)
    assert got.status_code == 200
    by = {t["task_id"]: t for t in got.get_json()["result"]["tasks"]}
    output = by["leak"]["output"]
    assert sorted(output) == sorted(FORMS)
    for form in FORMS:
        if form == "basic":
            # The secret's characters inside a longer base64 text: at most the three
            # characters it shares with the prefix's last group remain.
            assert output[form].startswith("Basic ") and "***" in output[form], output[form]
            assert len(output[form]) < len("Basic ***") + 12, output[form]
        else:
            assert output[form] == "***", (form, output[form])
    assert by["inline"]["output"] == {"upper": "***", "reversed": "***", "url": "***"}
    body = got.get_data(as_text=True)
    from tests.support.callables import encodings

    for form, text in encodings(VALUE).items():
        if form != "basic":
            assert text not in body, form


def test_a_short_secret_is_masked_only_as_written(app, client, op, viewer):
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config, secrets.SecretIn(
            team=op["team"]["name"], name="pin", value="abc"))
        db.session.remove()
    run = run_to_end(app, client, op, [
        {"id": "t", "type": "transform",
         "with": {"value": "{{ secrets.pin }} {{ secrets.pin | upper }} cab"}},
    ])
    task = client.get(f"/api/v1/runs/{run['id']}", headers=viewer).get_json()["result"]
    assert task["tasks"][0]["output"] == "*** ABC cab"
