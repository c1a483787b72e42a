"""Weekly and monthly regional exports (CONTRACT section 5).

`figures` (value types, publication rounding) <- `query` (one SQL snapshot) and `report`
(areas) <- `workbook` (report.xlsx) <- `writer` (the period's directory: staging, atomic
files, manifest, swap). The command is `consumers.cli.export`.
"""
