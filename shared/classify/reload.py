"""The taxonomy file, reloaded when it changes: an operator's edit takes effect without a restart, and
a bad edit is refused with a clear error while the taxonomy in use stays."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shared.classify.taxonomy import Taxonomy
from shared.errors import ConfigError

log = logging.getLogger(__name__)


class TaxonomyFile:
    """Holds the taxonomy loaded from `path`; `refresh()` (cheap: one stat) picks up a changed file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        # At start-up a bad file is fatal: there is no earlier taxonomy to fall back on.
        self.taxonomy = Taxonomy.from_file(path)
        self.last_error: ConfigError | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self) -> bool:
        """Reload if the file changed since the last look; True when a new taxonomy is in use.

        A file that does not load (invalid YAML, an unknown department, a missing file) is refused: the
        error is logged once per change of the file and kept in `last_error`, and the old taxonomy stays.
        """
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            taxonomy = Taxonomy.from_file(self.path)
        except ConfigError as exc:
            self.last_error = exc
            log.error(
                "taxonomy %s refused, still using version %s: %s", self.path, self.taxonomy.version, exc
            )
            return False
        self.taxonomy = taxonomy
        self.last_error = None
        log.info(
            "taxonomy %s reloaded: version %s, %d topics", self.path, taxonomy.version, len(taxonomy.topics)
        )
        return True
