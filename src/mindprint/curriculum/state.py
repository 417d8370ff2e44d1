"""``curriculum_state.json``: each topic's phase, replaced atomically after every change so that
``--resume`` continues at the right topic (and inside a topic from its last checkpoint).

Per topic: ``status`` (pending → training → trained → done, or failed / stopped when its gate
fails), ``attempts`` (gate retries used), ``steps`` (the topic's step target, raised by a retry),
and once known ``train`` (the run's summary numbers), ``eval`` (the gate's numbers) and ``why``
(the gate's failure reasons).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MindprintError
from ..outputs import current_keys, write_atomic
from .plan import Topic

STATE = "curriculum_state.json"


class State:
    def __init__(self, root: Path, topics: list[Topic]):
        self.path = root / STATE
        self.topics = {t.name: {"status": "pending", "attempts": 0, "steps": t.steps}
                       for t in topics}

    def load(self) -> None:
        saved = current_keys(json.loads(self.path.read_text())["topics"])  # old runs' key names
        if list(saved) != list(self.topics):
            raise MindprintError(f"{self.path}: written for topics {list(saved)}, the config now lists "
                                 f"{list(self.topics)}; resume with the same curriculum or --overwrite")
        self.topics = saved

    def save(self) -> None:
        write_atomic(self.path, json.dumps({"topics": self.topics}, indent=2))

    def __getitem__(self, name: str) -> dict:
        return self.topics[name]
