"""The egress policy: every outbound connection a task makes goes through it (``http``
tasks now, connectors and webhooks later). See ``policy`` for the rules and ``http`` for
an HTTP request that connects only to the addresses the policy checked."""

from capability.egress.policy import EgressDenied, EgressPolicy, EgressRefused

__all__ = ["EgressDenied", "EgressPolicy", "EgressRefused"]
