from django.urls import path

from .api import FeedbackIntakeView, MetricSummaryView

urlpatterns = [
    path("feedback/", FeedbackIntakeView.as_view(), name="feedback-intake"),
    path("metrics/", MetricSummaryView.as_view(), name="metric-summary"),
]
