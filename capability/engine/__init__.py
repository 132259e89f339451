"""The engine: runs advance task by task on RQ workers, with no central loop.

``decide`` holds the rules (pure functions), ``runner`` applies them to the database in
one transaction per step, ``dispatch`` hands ready attempts to RQ after the commit, and
``jobs`` is what a worker executes.
"""
