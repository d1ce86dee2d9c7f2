"""Tests through a real LiteLLM Proxy (``make test-gateway``); skipped in a plain run."""
