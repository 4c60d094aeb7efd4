"""Default teams, case rules and routing rules, loaded by a data migration."""

HIGH, NORMAL = 3, 2

DEFAULT_TEAMS = ["Product", "IT", "Customer Service"]
FALLBACK_TEAM = "Customer Service"

# (position, name, kind, score_min, score_max, sentiment_max, priority)
DEFAULT_CASE_RULES = [
    (10, "NPS detractor 0-3", "nps", 0, 3, None, HIGH),
    (20, "NPS detractor 4-6", "nps", 4, 6, None, NORMAL),
    (30, "CSAT very dissatisfied (1)", "csat", 1, 1, None, HIGH),
    (40, "CSAT dissatisfied (2)", "csat", 2, 2, None, NORMAL),
    (50, "CES very difficult (1-2)", "ces", 1, 2, None, HIGH),
    (60, "CES difficult (3)", "ces", 3, 3, None, NORMAL),
    (70, "One-star rating", "rating", 1, 1, None, HIGH),
    (80, "Two-star rating", "rating", 2, 2, None, NORMAL),
    (90, "Strongly negative text", "text", None, None, -0.5, NORMAL),
]

# (position, topic slug or None, touchpoint or "", team name)
DEFAULT_ROUTING_RULES = [
    (10, "website-app-bugs", "", "IT"),
    (20, "payment-checkout", "", "IT"),
    (30, "product-quality", "", "Product"),
    (40, "price", "", "Product"),
    (50, "delivery", "", "Customer Service"),
    (60, "customer-service", "", "Customer Service"),
    (70, None, "website", "IT"),
    (80, None, "app", "IT"),
    (90, None, "checkout", "IT"),
    (100, None, "product", "Product"),
]


def seed_defaults(apps) -> None:
    Team = apps.get_model("cases", "Team")
    CaseRule = apps.get_model("cases", "CaseRule")
    RoutingRule = apps.get_model("cases", "RoutingRule")
    Topic = apps.get_model("feedback", "Topic")

    teams = {}
    for name in DEFAULT_TEAMS:
        teams[name], _ = Team.objects.get_or_create(
            name=name, defaults={"is_fallback": name == FALLBACK_TEAM}
        )
    if not CaseRule.objects.exists():
        for position, name, kind, low, high, sentiment_max, priority in DEFAULT_CASE_RULES:
            CaseRule.objects.create(
                position=position, name=name, kind=kind, score_min=low, score_max=high,
                sentiment_max=sentiment_max, priority=priority,
            )
    if not RoutingRule.objects.exists():
        topics = {topic.slug: topic for topic in Topic.objects.all()}
        for position, slug, touchpoint, team in DEFAULT_ROUTING_RULES:
            RoutingRule.objects.create(
                position=position, topic=topics.get(slug) if slug else None,
                touchpoint=touchpoint, team=teams[team],
            )


DEFAULT_ROOT_CAUSES = [
    ("Website bug", "A defect in the website."),
    ("App bug", "A defect in the mobile app."),
    ("Delivery partner", "The courier or logistics partner failed."),
    ("Product defect", "The product was faulty, damaged or not as described."),
    ("Payment provider", "A payment, refund or billing failure."),
    ("Policy", "A company policy caused the problem (returns, fees, terms)."),
    ("Staff", "A member of staff handled the customer badly."),
    ("Customer misunderstanding", "Nothing was broken; the customer needed an explanation."),
    ("Other", "None of the above; say what in the resolution note."),
]

DEFAULT_CALENDAR = ("Office hours (UTC)", "UTC", "0,1,2,3,4", "09:00", "17:00")

# (position, name, priority or None, first response minutes, resolution
# minutes, is fallback); minutes are business minutes of the team calendar.
DEFAULT_SLA_POLICIES = [
    (10, "Urgent", 4, 60, 8 * 60, False),
    (20, "High", 3, 4 * 60, 3 * 8 * 60, False),
    (30, "Low", 1, 2 * 8 * 60, 10 * 8 * 60, False),
    (100, "Standard", None, 8 * 60, 5 * 8 * 60, True),
]


def seed_workflow(apps) -> None:
    RootCause = apps.get_model("cases", "RootCause")
    BusinessCalendar = apps.get_model("cases", "BusinessCalendar")
    SlaPolicy = apps.get_model("cases", "SlaPolicy")
    Team = apps.get_model("cases", "Team")

    for name, description in DEFAULT_ROOT_CAUSES:
        RootCause.objects.get_or_create(name=name, defaults={"description": description})
    name, zone, workdays, start, end = DEFAULT_CALENDAR
    calendar, _ = BusinessCalendar.objects.get_or_create(
        name=name, defaults={"timezone": zone, "workdays": workdays, "day_start": start, "day_end": end}
    )
    Team.objects.filter(calendar__isnull=True).update(calendar=calendar)
    if not SlaPolicy.objects.exists():
        for position, policy, priority, first_response, resolution, fallback in DEFAULT_SLA_POLICIES:
            SlaPolicy.objects.create(
                position=position, name=policy, priority=priority,
                first_response_minutes=first_response, resolution_minutes=resolution,
                is_fallback=fallback,
            )


# The global contact policy; teams may override any field with their own row.
DEFAULT_CONTACT_POLICY = {
    "cooldown_days": 30,
    "quiet_hours_start": "21:00",
    "quiet_hours_end": "08:00",
    "followup_delay_days": 3,
    "followup_exempt_from_cooldown": True,
    "reopen_when_still_unhappy": True,
    "invitation_valid_days": 14,
}


def seed_contact_policy(apps) -> None:
    ContactPolicy = apps.get_model("cases", "ContactPolicy")
    if not ContactPolicy.objects.filter(team__isnull=True).exists():
        ContactPolicy.objects.create(team=None, **DEFAULT_CONTACT_POLICY)
