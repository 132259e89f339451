"""The row-scope mechanism on a team-scoped model: every path hides other teams' rows."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import create_app
from app.extensions import db
from tests.support.app import PASSWORD, Factory, api_token, auth, make_config, unique
from tests.support.scope import Note, NoteBase


@pytest.fixture(scope="module")
def scoped(app, service_urls):
    application = create_app(make_config(
        service_urls,
        APG_CAPABILITIES=["capability.blueprint:capability", "tests.support.scope:capability"]))
    with application.app_context():
        NoteBase.metadata.create_all(db.engine)
    f = Factory(application)
    mine, theirs = f.team(), f.team()
    author = f.user("Author", teams=[mine])
    with application.app_context():
        notes = {}
        for label, team in (("mine", mine), ("theirs", theirs)):
            note = Note(title=unique(label), team_id=team["id"])
            db.session.add(note)
            db.session.commit()
            notes[label] = {"id": note.id, "title": note.title}
        db.session.remove()
    return {"app": application, "mine": mine, "theirs": theirs, "author": author,
            "notes": notes}


def login(s):
    client = s["app"].test_client()
    r = client.post("/login/", data={"username": s["author"]["username"], "password": PASSWORD})
    assert r.status_code == 302
    return client


def test_list_and_search_show_only_own_team(scoped):
    client = login(scoped)
    page = client.get("/noteview/list/").get_data(as_text=True)
    assert scoped["notes"]["mine"]["title"] in page
    assert scoped["notes"]["theirs"]["title"] not in page
    search = client.get(f"/noteview/list/?_flt_0_title={scoped['notes']['theirs']['title']}")
    # The filter value is echoed back in the search form; the row's id must not be.
    assert scoped["notes"]["theirs"]["id"] not in search.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/noteview/show/{id}", "/noteview/edit/{id}"])
def test_show_and_edit_of_other_team_are_404(scoped, path):
    client = login(scoped)
    assert client.get(path.format(id=scoped["notes"]["theirs"]["id"])).status_code == 404
    assert client.get(path.format(id=scoped["notes"]["mine"]["id"])).status_code == 200


def test_delete_of_other_team_changes_nothing(scoped):
    client = login(scoped)
    theirs = scoped["notes"]["theirs"]["id"]
    r = client.post(f"/noteview/delete/{theirs}")
    assert r.status_code == 404
    with scoped["app"].app_context():
        assert db.session.get(Note, theirs) is not None


def test_related_dropdown_offers_only_own_teams_and_rejects_crafted_post(scoped):
    client = login(scoped)
    form = client.get("/noteview/add").get_data(as_text=True)
    options = re.findall(r'<option[^>]*value="([^"]+)"', form)
    assert scoped["mine"]["id"] in options and scoped["theirs"]["id"] not in options
    title = unique("crafted")
    client.post("/noteview/add", data={"title": title, "team": scoped["theirs"]["id"]})
    with scoped["app"].app_context():
        assert db.session.execute(select(Note).where(Note.title == title)).first() is None
    ok_title = unique("fine")
    client.post("/noteview/add", data={"title": ok_title, "team": scoped["mine"]["id"]})
    with scoped["app"].app_context():
        assert db.session.execute(select(Note).where(Note.title == ok_title)).first() is not None


def test_api_is_scoped(scoped):
    client = scoped["app"].test_client()
    headers = auth(api_token(client, scoped["author"]["username"]))
    listed = client.get("/api/v1/notes/", headers=headers).get_json()
    assert {n["id"] for n in listed["result"]} >= {scoped["notes"]["mine"]["id"]}
    assert scoped["notes"]["theirs"]["id"] not in {n["id"] for n in listed["result"]}
    assert client.get(f"/api/v1/notes/{scoped['notes']['theirs']['id']}",
                      headers=headers).status_code == 404
    assert client.get(f"/api/v1/notes/{scoped['notes']['mine']['id']}",
                      headers=headers).status_code == 200
    assert client.put(f"/api/v1/notes/{scoped['notes']['theirs']['id']}", json={"title": "x"},
                      headers=headers).status_code == 404
    assert client.delete(f"/api/v1/notes/{scoped['notes']['theirs']['id']}",
                         headers=headers).status_code == 404
