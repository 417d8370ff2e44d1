"""Data: JSONL records → validated typed records → rendered token ids + loss masks."""
