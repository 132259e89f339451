"""The workflow orchestration capability."""
