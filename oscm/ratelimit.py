"""Login rate limits kept in Django's cache.

Failed logins count in fixed windows against three keys, each with its own
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
        window, remaining = self._window()
        limits = self._limits(username=username, ip=ip, window=window)
        counts = cache.get_many(list(limits))
        if any(count >= limits[key] for key, count in counts.items()):
            return remaining
        return 0

    def record_failure(self, *, username: str, ip: str) -> None:
        window, _ = self._window()
        for key in self._limits(username=username, ip=ip, window=window):
            # add() creates the counter only if missing, so incr() never
            # raises for a key another process created first.
            cache.add(key, 0, timeout=self.window_seconds + 1)
            try:
                cache.incr(key)
            except ValueError:
                # The key expired between add() and incr(); the next
                # failure starts a new count.
                pass
        logger.warning("Failed login", extra={"client_ip": ip})

    def _window(self) -> tuple[int, int]:
        now = int(time.time())
        return now // self.window_seconds, self.window_seconds - now % self.window_seconds

    def _limits(self, *, username: str, ip: str, window: int) -> dict[str, int]:
        """Return each cache key of this attempt with its failure limit."""
        # Hashing keeps arbitrary usernames within cache key rules.
        name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        limits = {f"login-fail:user:{name}:{window}": self.max_failures_per_username}
        if ip:
            limits[f"login-fail:user-ip:{name}:{ip}:{window}"] = self.max_failures
            limits[f"login-fail:ip:{ip}:{window}"] = self.max_failures_per_ip
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
