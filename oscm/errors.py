"""The one domain error type that services raise and the API maps to JSON."""


class DomainError(Exception):
    """A request the domain rejects, with a message a person can act on.

    ``status`` is the HTTP status the API answers with; ``details`` carries
    machine-readable context such as the offending value.
    """

    status = 400

    def __init__(self, message: str, *, details: dict | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if status is not None:
            self.status = status
