"""URLs of the helpdesk peer: the helpdesk itself (its REST API is under
`/api/`) and Django's admin."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("helpdesk.urls", namespace="helpdesk")),
]
