"""``manifest.json``: everything needed to tell whether two runs could have given the same numbers.

Written at the start of a run (status ``running``) and completed at its end (``completed``,
``interrupted`` or ``failed``, with the end time and the stop reason), so even a killed run leaves
one. It holds:

* Mindprint's version and, when run from a git checkout, the commit (and whether it was dirty);
* versions of the libraries that change numbers (torch, transformers, peft, mlx, mlx-lm, trl ...);
* platform and device; the seed; the resolved config;
* SHA-256 of every data file, and of the tokenized dataset (every token id and loss-mask bit, so a
  tokenizer or chat-template change shows even when the files did not change);
* the base model's identity: spec, kind, directory, and a hash of its weight files. Hashing a
  135M-parameter model reads ~0.5 GB, so file hashes are cached by (path, size, mtime) in
  ``$MINDPRINT_CACHE/file-hashes.json``: a rerun costs a ``stat``.

:func:`differences` compares two manifests; ``mindprint train --reproduce RUN`` prints each
difference as a warning before it trains.

* :mod:`.identity`     hashes of files, the tokenized data and the base model
* :mod:`.environment`  versions, git commit, platform, device
* :mod:`.writer`       the manifest: build, write (a run callback), load, compare, reproduce
"""

from .environment import (PACKAGES, device_info, git_info, now_iso, package_versions,
                          platform_info)
from .identity import (MODEL_FILES, WEIGHT_SUFFIXES, cached_sha256, data_files, model_identity,
                       sha256_file, tokenized_sha256)
from .writer import (FORMAT_VERSION, MANIFEST, ManifestWriter, build, compare_outcome,
                     differences, load, reproduce_config)

__all__ = ["FORMAT_VERSION", "MANIFEST", "MODEL_FILES", "PACKAGES", "WEIGHT_SUFFIXES",
           "ManifestWriter", "build", "cached_sha256", "compare_outcome", "data_files",
           "device_info", "differences", "git_info", "load", "model_identity", "now_iso",
           "package_versions", "platform_info", "reproduce_config", "sha256_file",
           "tokenized_sha256"]
