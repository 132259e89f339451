"""Process-level services: Redis (external or embedded), workers, scheduler."""
