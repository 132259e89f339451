"""Tenants, teams and team membership."""
