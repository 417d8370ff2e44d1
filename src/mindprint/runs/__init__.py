"""The runs registry: run directories as records, and listing, showing and comparing them.

* :mod:`.record`  :class:`Run` (one run directory: config, summary, manifest, metrics, adapter),
  finding run directories (:func:`find_runs`, :func:`resolve_run`)
* :mod:`.show`    ``mindprint runs list | show | compare``; the comparisons the web UI shares
"""

from __future__ import annotations

from .record import (DEFAULT_ROOT, SUMMARY_KEYS, Run, _duration, _fmt, find_runs, is_run_dir,
                     read_json_object, resolve_run)
from .show import (cmd_compare, cmd_list, cmd_show, config_differences, console, list_table,
                   metric_rows)

__all__ = ["DEFAULT_ROOT", "SUMMARY_KEYS", "Run", "cmd_compare", "cmd_list", "cmd_show",
           "config_differences", "console", "find_runs", "is_run_dir", "list_table",
           "metric_rows", "read_json_object", "resolve_run"]
