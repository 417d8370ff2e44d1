"""The HTTP routes, one module per resource; each ``router(ctx)`` returns an ``APIRouter``
whose handlers close over the server's :class:`~mindprint.server.common.Context`.

* :mod:`.pages`     the web page, its static files, ``/api/info``, ``/api/config/fields``
* :mod:`.datasets`  uploads (validated like ``mindprint data validate``), list, preview, delete
* :mod:`.runs`      training runs: create (the CLI's config schema), cancel, resume, metrics,
  logs, samples, adapter download, side-by-side comparison of runs
* :mod:`.events`    the run's live event stream (Server-Sent Events)
* :mod:`.evals`     eval and compare jobs and their reports
"""
