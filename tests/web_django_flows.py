"""Django views for the login-refusal and propagation tests (a URLconf of its own:
``override_settings(ROOT_URLCONF="tests.web_django_flows")``)."""

from __future__ import annotations

import httpx
from django.contrib import auth as django_auth
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import tests.web_django as project
from sessionhub import LoginRefused, auth
from sessionhub.propagation import Propagation, current_session_id


class Downstream:
    """Where the views call a downstream service; set by the test."""

    echo = ""  # trusted
    elsewhere = ""  # not trusted
    propagation = Propagation([])


def login_now(request: HttpRequest) -> HttpResponse:
    try:
        auth.login_now(request.session, request.GET["user"])
    except LoginRefused:
        return HttpResponse("too many devices", status=403)
    return HttpResponse("in")


async def alogin_now(request: HttpRequest) -> HttpResponse:
    try:
        await auth.alogin_now(request.session, request.GET["user"])
    except LoginRefused:
        return HttpResponse("too many devices", status=403)
    return HttpResponse("in")


def login_uncaught(request: HttpRequest) -> HttpResponse:
    auth.login_now(request.session, request.GET["user"])
    return HttpResponse("in")


def django_login_and_save(request: HttpRequest) -> HttpResponse:
    """contrib.auth's login(), then save() at once to learn of a refusal."""
    user = django_auth.authenticate(request, username=request.GET["user"], password="pw")
    assert user is not None
    django_auth.login(request, user)
    try:
        request.session.save()
    except LoginRefused:
        return HttpResponse("too many devices", status=403)
    return HttpResponse("in")


def call_downstream(request: HttpRequest) -> HttpResponse:
    with Downstream.propagation.install(httpx.Client(timeout=30)) as client:
        seen = client.get(Downstream.echo).json()["id"]
        elsewhere = client.get(Downstream.elsewhere).json()["id"]
    return JsonResponse(
        {"current": current_session_id(), "downstream": seen, "elsewhere": elsewhere}
    )


async def acall_downstream(request: HttpRequest) -> HttpResponse:
    async with Downstream.propagation.install(httpx.AsyncClient(timeout=30)) as client:
        seen = (await client.get(Downstream.echo)).json()["id"]
        elsewhere = (await client.get(Downstream.elsewhere)).json()["id"]
    return JsonResponse(
        {"current": current_session_id(), "downstream": seen, "elsewhere": elsewhere}
    )


urlpatterns = [
    path("login-now", login_now),
    path("async/login-now", alogin_now),
    path("login-uncaught", login_uncaught),
    path("django/login-and-save", django_login_and_save),
    path("django/whoami", project.django_whoami),
    path("read", project.read),
    path("write", project.write),
    path("downstream", call_downstream),
    path("async/downstream", acall_downstream),
]
