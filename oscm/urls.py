from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .ratelimit import login_rate_limited


class FeedbackIntakeViewSchema(OpenApiViewExtension):
    """Describe the feedback intake, an APIView without a serializer, to the
    OpenAPI generator."""

    target_class = "feedback.api.FeedbackIntakeView"

    def view_replacement(self):
        @extend_schema_view(
            post=extend_schema(
                request=OpenApiTypes.OBJECT,
                responses={201: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
                description="Record one feedback object or a list of up to 1000.",
            )
        )
        class Described(self.target_class):
            pass

        return Described


class MetricSummaryViewSchema(OpenApiViewExtension):
    target_class = "feedback.api.MetricSummaryView"

    def view_replacement(self):
        from feedback.api import MetricQuerySerializer

        @extend_schema_view(
            get=extend_schema(
                parameters=[MetricQuerySerializer],
                responses={200: OpenApiTypes.OBJECT},
            )
        )
        class Described(self.target_class):
            pass

        return Described


urlpatterns = [
    # Listed before admin.site.urls so failed admin logins count against the
    # same per-username and per-IP limits as the token endpoint.
    path("admin/login/", login_rate_limited(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("feedback.urls")),
    path("api/v1/", include("cases.urls")),
    path("s/", include("cases.survey_urls")),
    path("api/v1/", include("actions.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The workspace: its login shares the limiter of the admin login.
    path(
        "login/",
        login_rate_limited(
            auth_views.LoginView.as_view(redirect_authenticated_user=True)
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("cases.web_urls")),
    path("", include("actions.web_urls")),
    path("", include("feedback.web_urls")),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema"),
        name="api-docs",
    ),
]
