"""The HTML pages: a run's report, compare's leaderboard, rank's scores. Reads files and result
dicts only; never imports torch."""

from tlkit.report.board_pages import write_compare_page, write_rank_page
from tlkit.report.run_page import write_report

__all__ = ["write_compare_page", "write_rank_page", "write_report"]
