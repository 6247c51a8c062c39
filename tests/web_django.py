"""A Django project for the tests: settings, views and URLs in one module.

Importing it configures Django (once per process) with the sessionhub engine
and middleware, django.contrib.auth and an in-memory SQLite database.
"""

from __future__ import annotations

import json

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only-not-a-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.web_django",
        SESSION_ENGINE="sessionhub.web.django",
        SESSIONHUB={},
        MIDDLEWARE=[
            "sessionhub.web.django.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.contrib import auth as django_auth
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from sessionhub import auth
from sessionhub.web.django import SessionStore
from tests.web_apps import PUBLIC, identity


def _store(request: HttpRequest) -> SessionStore:
    session = request.session
    assert isinstance(session, SessionStore)
    return session


def anon(request: HttpRequest) -> HttpResponse:
    return HttpResponse("anon")


def read(request: HttpRequest) -> HttpResponse:
    store = _store(request)
    return JsonResponse(
        {"data": dict(store.items()), "principal": auth.sessionhub_session(store).principal}
    )


def write(request: HttpRequest) -> HttpResponse:
    request.session[request.GET["key"]] = request.GET["value"]
    return HttpResponse("written")


def varied(request: HttpRequest) -> HttpResponse:
    """A view whose response has a Vary of its own, and looks at the session."""
    response = HttpResponse(str(request.session.get("user")))
    response["Vary"] = "Accept-Language"
    return response


def login(request: HttpRequest) -> HttpResponse:
    auth.login(request.session, request.GET["user"])
    return HttpResponse("in")


def logout(request: HttpRequest) -> HttpResponse:
    auth.logout(request.session)
    return HttpResponse("out")


def fail(request: HttpRequest) -> HttpResponse:
    request.session[request.GET["key"]] = "lost"
    return HttpResponse("failed", status=500)


def look(request: HttpRequest) -> HttpResponse:
    value = identity(auth.sessionhub_session(request.session), request.GET["name"])
    return HttpResponse(value, content_type="application/json", headers=PUBLIC)


def django_login(request: HttpRequest) -> HttpResponse:
    """contrib.auth's own login(): cycle_key(), then the user's id in the session."""
    user = django_auth.authenticate(request, username=request.GET["user"], password="pw")
    assert user is not None
    django_auth.login(request, user)
    return HttpResponse("in")


def django_logout(request: HttpRequest) -> HttpResponse:
    django_auth.logout(request)
    return HttpResponse("out")


def django_whoami(request: HttpRequest) -> HttpResponse:
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


async def async_counter(request: HttpRequest) -> HttpResponse:
    """An async view using the session's async API."""
    count = await request.session.aget("count", 0) + 1
    await request.session.aset("count", count)
    return HttpResponse(json.dumps({"count": count}), content_type="application/json")


urlpatterns = [
    path("anon", anon),
    path("read", read),
    path("write", write),
    path("varied", varied),
    path("login", login),
    path("logout", logout),
    path("fail", fail),
    path("identity", look),
    path("django/login", django_login),
    path("django/logout", django_logout),
    path("django/whoami", django_whoami),
    path("async/counter", async_counter),
]


def create_users(*names: str) -> None:
    """Migrate the in-memory database (once) and create `names` with password "pw"."""
    from django.core.management import call_command

    if "auth_user" not in django.db.connection.introspection.table_names():
        call_command("migrate", verbosity=0, run_syncdb=True)
    for name in names:
        if not User.objects.filter(username=name).exists():
            User.objects.create_user(name, password="pw")
