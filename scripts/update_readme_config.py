"""Regenerate the config reference table in README.md from the config schema (make readme)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

table = subprocess.run([sys.executable, "-m", "mindprint.cli", "config", "keys", "--markdown"],
                       check=True, capture_output=True, text=True).stdout
text = README.read_text(encoding="utf-8")
new = re.sub(re.escape(START) + ".*?" + re.escape(END), f"{START}\n{table}{END}", text, flags=re.S)
README.write_text(new, encoding="utf-8")
print("README.md config reference updated" if new != text else "README.md already up to date")
