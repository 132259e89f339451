"""Security: roles, the row scope of teams and tenants, login protection, headers."""
