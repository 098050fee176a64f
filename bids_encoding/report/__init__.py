"""HTML reports: one per subject and one for the group, files only, relative links.

``files`` gathers what a report shows (staged and committed derivatives), ``figures`` draws,
``html`` assembles pages, ``methods`` writes the methods text and provenance; ``subject`` and
``group`` build the two reports.
"""

from .group import write_group_report
from .subject import write_subject_report

__all__ = ["write_group_report", "write_subject_report"]
