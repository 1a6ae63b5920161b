"""`pygent-runner view`: run logs in the browser (reader, pages, the Starlette app; static/ has its own JS and CSS)."""
