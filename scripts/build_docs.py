"""Build the API reference (HTML, from the docstrings) with pdoc: ``make docs``.

Documents the public surface only: the ``mindprint`` package (its ``__all__``) and the
``mindprint.api`` modules behind it. The package loads its names on first use
(``mindprint.__getattr__``); they are loaded here first so pdoc documents each one as what it is
(``mindprint.evaluate`` the function, not the ``evaluate`` subpackage of the same name).

    python scripts/build_docs.py [OUT_DIR]        (default: docs/api)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pdoc

import mindprint

# the package with its submodules, less every submodule outside mindprint.api (pdoc's "!" specs)
MODULES = ["mindprint", "mindprint.api", r"!mindprint\.(?!api\b)"]


def build(out: Path) -> Path:
    for name in mindprint.__all__:
        getattr(mindprint, name)
    pdoc.render.configure(docformat="restructuredtext",
                          footer_text=f"mindprint {mindprint.__version__}")
    pdoc.pdoc(*MODULES, output_directory=out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/api")) / "index.html")
