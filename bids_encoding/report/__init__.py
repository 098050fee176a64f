"""HTML reports: one per subject and one for the group, files only, relative links."""

from .html import write_group_report, write_subject_report

__all__ = ["write_group_report", "write_subject_report"]
