"""The chat playground's feedback: picks and edits become preference pairs, thumbs KTO examples,
appended to the workspace's own datasets (validated like uploads, counted in the report, rewritten
atomically); a bad record is refused with the validator's words; a deleted feedback dataset is
started afresh. No model is loaded."""

from __future__ import annotations

import json

from .test_api import client

CONVO = [{"role": "system", "content": "You are Ines, a ferry captain in the Azores."},
         {"role": "user", "content": "Do you ever get seasick?"},
         {"role": "assistant", "content": "Not since the winter of '98. The sea owes me that."},
         {"role": "user", "content": "What about the passengers?"}]


def _lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_picks_edits_and_thumbs_append_to_workspace_datasets(tmp_path):
    with client(tmp_path / "ws") as c:
        r = c.post("/api/feedback", json={"kind": "preference", "prompt": CONVO,
                                          "chosen": "Ginger biscuits and the horizon, querida.",
                                          "rejected": "Seasickness is a common condition."})
        assert r.status_code == 201, r.text
        pref = r.json()
        assert pref["name"] == "chat-preference.jsonl" and pref["format"] == "preference"
        # an edit is a pair too (the edit chosen, the model's answer rejected): same dataset
        r = c.post("/api/feedback", json={"kind": "preference", "prompt": CONVO[:2],
                                          "chosen": "Only on land, funnily enough.",
                                          "rejected": "As a captain, I do not."})
        assert r.json()["id"] == pref["id"] and r.json()["report"]["valid"] == 2
        for label, text in ((True, "Ginger biscuits."), (False, "I cannot say.")):
            r = c.post("/api/feedback", json={"kind": "kto", "prompt": CONVO,
                                              "completion": text, "label": label})
            assert r.status_code == 201, r.text
        kto = r.json()
        assert kto["name"] == "chat-kto.jsonl" and kto["format"] == "kto"
        assert (kto["report"]["total"], kto["report"]["invalid"]) == (2, 0)
        rows = {d["name"]: d for d in c.get("/api/datasets").json()}
        assert set(rows) == {"chat-preference.jsonl", "chat-kto.jsonl"}
        store = c.app.state.store
        lines = _lines(store.get_dataset(pref["id"])["path"])
        assert lines[0] == {"prompt": CONVO, "chosen": "Ginger biscuits and the horizon, querida.",
                            "rejected": "Seasickness is a common condition."}
        assert [x["label"] for x in _lines(store.get_dataset(kto["id"])["path"])] == [True, False]
        assert c.get(f"/api/datasets/{pref['id']}/preview").json()["rows"][1]["line"] == 2

        # refused, nothing appended: the validator's words, fields of the other kind
        r = c.post("/api/feedback", json={"kind": "preference", "prompt": CONVO,
                                          "chosen": "Same.", "rejected": "Same."})
        assert r.status_code == 422 and "chosen equals rejected" in r.json()["detail"]
        r = c.post("/api/feedback", json={"kind": "kto", "prompt": CONVO, "chosen": "x"})
        assert r.status_code == 422
        assert r.json()["detail"] == ("kto feedback takes completion and label; missing: "
                                      "completion, label; not used: chosen")
        r = c.post("/api/feedback", json={"kind": "kto", "prompt": [{"role": "robot",
                                          "content": "x"}], "completion": "y", "label": True})
        assert r.status_code == 422
        assert len(_lines(store.get_dataset(pref["id"])["path"])) == 2

        # deleted: the next pick starts a new dataset
        assert c.delete(f"/api/datasets/{pref['id']}").status_code == 204
        r = c.post("/api/feedback", json={"kind": "preference", "prompt": CONVO,
                                          "chosen": "a", "rejected": "b"})
        assert r.status_code == 201 and r.json()["id"] != pref["id"]
        assert r.json()["report"]["total"] == 1
