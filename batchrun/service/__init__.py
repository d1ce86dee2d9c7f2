"""Service: SciBox (or any OpenAI-compatible gateway) as the runner sees it.

Takes: requests and the endpoint's settings (base URL, token from ``SCIBOX_API_KEY``).
Gives: checked answers (``answers``), errors sorted into retryable or not (``statuses``), the
gateway's rate-limit headers read (``ratelimits``), the HTTP client (``client``) and the
endpoint opened or the bundled emulator started (``endpoint``).
"""
