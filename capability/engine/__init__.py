"""The engine: runs advance task by task on RQ workers, with no central loop.

From the bottom up (each module imports only those before it; ``make lint`` checks):

* ``settings`` (``EngineSettings``), ``dispatch`` (RQ enqueue and stop, live publish),
  ``outbox`` (the unit of work: what is sent after the commit);
* ``masking`` (secrets never leave in clear), ``decide`` (the rules of DSL.md as pure
  functions, the ``Plan`` of a version, why a task did not run, unknown queues);
* ``state``: row primitives and the one retry decision; ``outputs`` (the cap on a
  stored output);
* ``foreach``, ``compensation``, ``advance`` (what a run does next);
* ``runner`` (the transaction steps), ``instant`` (an instant type's hop in one
  transaction), ``controls`` (cancel, pause, resume, retry, approvals, and which is
  allowed now), ``subruns`` (``workflow`` tasks), ``gates`` (a task's ``when``,
  evaluated as its attempt begins, outside any transaction);
* ``isolation`` (a ``python`` task's child process), ``executors`` (what each task type
  does), ``rq_state``, ``stops`` and ``reaper`` (recovery), ``jobs`` (the RQ entry
  points, which own the commits).

Nothing in the engine imports a service or a web module, or reads ``current_app`` below
``jobs``.
"""
