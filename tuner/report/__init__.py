"""A study's report, read from its run directory alone: `report.md` and `report.html`.

- `report`: the document, its tables and the plots inlined (`build`, `write_report`);
- `plots`: the figures, drawn with matplotlib (the search, the front, telemetry);
- `terminal`: what a terminal shows with rich: live progress (`StudyView`) and result tables.
"""

from tuner.report.report import build, write_report

__all__ = ["build", "write_report"]
