"""Login rate limits kept in Django's cache.

Failed logins count against three keys, each with its own
limit: the username from one client IP (tight, stops guessing one
password), the username from any IP (looser, slows guessing spread over
many addresses) and the client IP for any username (loosest, slows
password spraying without letting a few typos from a shared address or a
reverse proxy lock everyone out). Once a key reaches its limit, further
attempts on it get 429 with Retry-After until the window ends, even with
the right password. The token endpoint, the workspace login and the admin
login share one limiter.
"""

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

# Failed attempts allowed within one window, per key.
LOGIN_MAX_FAILURES = 5
LOGIN_MAX_FAILURES_PER_USERNAME = 20
LOGIN_MAX_FAILURES_PER_IP = 50
LOGIN_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class LoginRateLimiter:
    max_failures: int = LOGIN_MAX_FAILURES
    max_failures_per_username: int = LOGIN_MAX_FAILURES_PER_USERNAME
    max_failures_per_ip: int = LOGIN_MAX_FAILURES_PER_IP
    window_seconds: int = LOGIN_WINDOW_SECONDS

    def retry_after(self, *, username: str, ip: str) -> int:
        """Return the seconds until a blocked client may try again, 0 if not blocked."""
        limits = self._limits(username=username, ip=ip)
        stored = cache.get_many([*limits, *(f"{key}:until" for key in limits)])
        now = time.time()
        waits = [
            int(stored.get(f"{key}:until", now) - now) + 1
            for key, limit in limits.items()
            if stored.get(key, 0) >= limit
        ]
        return max(waits, default=0)

    def record_failure(self, *, username: str, ip: str) -> None:
        # Each window starts at the first failure of its key and lasts
        # window_seconds, so failures are never split across a clock minute.
        until = time.time() + self.window_seconds
        for key in self._limits(username=username, ip=ip):
            # add() creates a key only if missing, so the counter and its end
            # time start together and incr() never raises for a key that
            # another process created first.
            cache.add(f"{key}:until", until, timeout=self.window_seconds)
            cache.add(key, 0, timeout=self.window_seconds)
            try:
                cache.incr(key)
            except ValueError:
                # The key expired between add() and incr(); the next
                # failure starts a new count.
                pass
        logger.warning("Failed login", extra={"client_ip": ip})

    def _limits(self, *, username: str, ip: str) -> dict[str, int]:
        """Return each cache key of this attempt with its failure limit."""
        # Hashing keeps arbitrary usernames within cache key rules.
        name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        limits = {f"login-fail:user:{name}": self.max_failures_per_username}
        if ip:
            limits[f"login-fail:user-ip:{name}:{ip}"] = self.max_failures
            limits[f"login-fail:ip:{ip}"] = self.max_failures_per_ip
        return limits


login_rate_limiter = LoginRateLimiter()


def client_ip(request: HttpRequest) -> str:
    # NOTE: behind a reverse proxy REMOTE_ADDR is the proxy's address, so all
    # clients share one IP counter; the username counter still applies.
    return request.META.get("REMOTE_ADDR", "")


def too_many_attempts(retry_after: int) -> JsonResponse:
    response = JsonResponse(
        {
            "detail": "Too many failed login attempts: try again in "
            f"{retry_after} seconds."
        },
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


def login_rate_limited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a form login view, such as the admin login, with the limiter.

    A POST that leaves the user anonymous counts as a failed login.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "")
        ip = client_ip(request)
        retry_after = login_rate_limiter.retry_after(username=username, ip=ip)
        if retry_after:
            return too_many_attempts(retry_after)
        response = view(request, *args, **kwargs)
        if not request.user.is_authenticated:
            login_rate_limiter.record_failure(username=username, ip=ip)
        return response

    return wrapper
