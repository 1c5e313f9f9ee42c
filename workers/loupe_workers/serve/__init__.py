"""``loupe serve``: a local web app over a store: samples of a version in a filtered, paged grid, each
sample's record with its boxes and lineage, duplicate groups, what was left out and why, the diff of
two versions, and search. catalog.py holds the logic, app.py the HTTP handlers, static/ the page."""
