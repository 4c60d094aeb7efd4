"""Login rate limits kept in Django's cache, per username and per client IP.

Failed logins count against both keys in fixed windows; once either key
reaches the limit, further attempts get 429 with Retry-After until the
window ends, even with the right password. The token endpoint and the admin
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

# Failed attempts allowed per username and per IP within one window.
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class LoginRateLimiter:
    max_failures: int = LOGIN_MAX_FAILURES
    window_seconds: int = LOGIN_WINDOW_SECONDS

    def retry_after(self, *, username: str, ip: str) -> int:
        """Return the seconds until a blocked client may try again, 0 if not blocked."""
        window, remaining = self._window()
        keys = self._keys(username=username, ip=ip, window=window)
        counts = cache.get_many(keys)
        if any(count >= self.max_failures for count in counts.values()):
            return remaining
        return 0

    def record_failure(self, *, username: str, ip: str) -> None:
        window, _ = self._window()
        for key in self._keys(username=username, ip=ip, window=window):
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

    @staticmethod
    def _keys(*, username: str, ip: str, window: int) -> list[str]:
        # Hashing keeps arbitrary usernames within cache key rules.
        name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        keys = [f"login-fail:user:{name}:{window}"]
        if ip:
            keys.append(f"login-fail:ip:{ip}:{window}")
        return keys


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
