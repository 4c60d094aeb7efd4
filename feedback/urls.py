from django.urls import path

from .api import MetricSummaryView

urlpatterns = [
    path("metrics/", MetricSummaryView.as_view(), name="metric-summary"),
]
